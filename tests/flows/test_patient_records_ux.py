"""What a person sees of patient-records runs (issue 14.4, 14.5) on the session's stack: runs named after
their patient, a patient Metriport does not know ends the run with a plain message and closes its wait,
a date that is not a date is refused when the run is created,."""

from __future__ import annotations

import uuid

import pytest
from prefect.client.schemas.objects import StateType
from prefect.exceptions import PrefectHTTPStatusError

from metriport_devtools.stack import LocalStack
from metriport_flows.store import Store, WaitStatus
from tests.fixtures.stack import run_patient_records, wait_for_final_state

pytestmark = pytest.mark.e2e


def test_a_patient_metriport_does_not_know_fails_plainly_and_closes_its_wait(
    local_stack: LocalStack, stack_store: Store
) -> None:
    patient_id = f"unknown-{uuid.uuid4().hex[:12]}"
    run_id = run_patient_records(local_stack, {"patient_id": patient_id})
    run = wait_for_final_state(local_stack, run_id)
    assert run.state is not None and run.state.type == StateType.FAILED
    assert run.state.message is not None and f"patient {patient_id} not found at Metriport" in run.state.message
    assert run.name == f"patient-records · {patient_id}"
    [wait] = stack_store.waits_for_run(run_id)
    assert wait.status == WaitStatus.abandoned
    assert wait.id not in {w.id for w in stack_store.open_waits()}


def test_a_date_that_is_not_a_date_is_refused_when_the_run_is_created(local_stack: LocalStack) -> None:
    with pytest.raises(PrefectHTTPStatusError) as refused:
        run_patient_records(local_stack, {"patient_id": "p-1", "date_from": "yesterday"})
    assert refused.value.response.status_code == 409
    assert "request.date_from" in refused.value.response.text
