"""What a person sees of patient-records runs (issue 14.4, 14.5) on the session's stack: runs named after
their patient, a patient Metriport does not know ends the run with a plain message and closes its wait,
a date that is not a date is refused when the run is created,."""

from __future__ import annotations

import uuid

import httpx
import pytest
from prefect.client.schemas.objects import StateType
from prefect.exceptions import PrefectHTTPStatusError

from metriport_devtools.stack import LocalStack
from metriport_flows.store import Store, WaitStatus
from tests.fixtures.sandbox import FACILITY
from tests.fixtures.stack import run_patient_records, wait_for_final_state, wait_for_state_name

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


def test_a_suspended_run_says_what_it_waits_for(
    local_stack: LocalStack, stack_api: httpx.Client, sandbox_control: httpx.Client, stack_store: Store
) -> None:
    sandbox_control.post("/config", json={"patient_limit": 1000}).raise_for_status()
    facility = stack_api.post("/medical/v1/facility", json=FACILITY).raise_for_status().json()["id"]
    body = {
        "firstName": "Jane",
        "lastName": f"Ux{uuid.uuid4().hex[:8]}",
        "dob": "1980-01-01",
        "genderAtBirth": "F",
        "address": [{"addressLine1": "1 Main St", "city": "Springfield", "state": "IL", "zip": "62701"}],
    }
    patient = stack_api.post("/medical/v1/patient", params={"facilityId": facility}, json=body)
    patient_id = patient.raise_for_status().json()["id"]
    sandbox_control.post("/config", json={"delay": [20, 20]}).raise_for_status()  # slower than the hot window
    try:
        run_id = run_patient_records(local_stack, {"patient_id": patient_id, "hot_window_seconds": 0})
        suspended = wait_for_state_name(local_stack, run_id, "Suspended", timeout=90)
        [wait] = stack_store.waits_for_run(run_id)
        assert wait.request_id
        assert suspended.state is not None
        assert suspended.state.message == f"waiting for Metriport: documents-1, request {wait.request_id}"
    finally:
        sandbox_control.post("/config", json={"delay": [0, 0]}).raise_for_status()
    run = wait_for_final_state(local_stack, run_id, timeout=180)
    assert run.state is not None and run.state.type == StateType.COMPLETED, run.state.message
