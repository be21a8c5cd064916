"""Two runs for one patient both end: Metriport answers the second start call with the running query's
request id, and the one webhook that ends the query ends both runs' waits.

On the session stack, one patient gets an admit run and a discharge run (two patient-records runs started
by two events) and, between them, the nightly cohort that holds the patient. The emulator holds the
document query until all three runs have started theirs, so every start call lands on the first query.
"""

from __future__ import annotations

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import StateType

from metriport_devtools.stack import LocalStack
from metriport_flows.domain.stages import Stage
from metriport_flows.store import Store
from tests.e2e.test_reconcile_e2e import new_patient
from tests.fixtures.patients import runs_of
from tests.fixtures.sandbox import FACILITY
from tests.fixtures.stack import run_deployment_on, run_patient_records, until, wait_for_final_state

pytestmark = pytest.mark.e2e


def test_admit_and_discharge_runs_and_the_nightly_cohort_for_one_patient_all_complete(
    local_stack: LocalStack,
    stack_api: httpx.Client,
    sandbox_control: httpx.Client,
    stack_store: Store,
    stack_prefect: SyncPrefectClient,
    held_document_queries: None,
) -> None:
    facility_id = stack_api.post("/medical/v1/facility", json=FACILITY).raise_for_status().json()["id"]
    patient_id = new_patient(stack_api, facility_id, "Jane")
    admit = run_patient_records(local_stack, {"patient_id": patient_id, "hot_window_seconds": 30})
    params = {"patient_ids": [patient_id], "poll_seconds": 2, "hot_window_seconds": 30}
    cohort_id = run_deployment_on(local_stack, "cohort-refresh/nightly", {"params": params})
    discharge = run_patient_records(local_stack, {"patient_id": patient_id, "hot_window_seconds": 30})
    until(
        lambda: sum(1 for w in stack_store.open_waits() if w.patient_id == patient_id and w.request_id) == 3,
        timeout=90,
        what="three documents waits, each with the request id of its start call",
    )
    sandbox_control.post("/config", json={"hold_document_queries": False}).raise_for_status()

    cohort = wait_for_final_state(local_stack, cohort_id, timeout=150)
    assert cohort.state is not None and cohort.state.type == StateType.COMPLETED, cohort.state.message
    [nightly] = runs_of(
        stack_prefect, "patient-records/on-demand", idempotency_key={"any_": [f"cohort:{cohort_id}:{patient_id}"]}
    )
    run_ids = [admit, str(nightly.id), discharge]
    for run_id in run_ids:
        run = wait_for_final_state(local_stack, run_id, timeout=120)
        assert run.state is not None and run.state.type == StateType.COMPLETED, (run.state.name, run.state.message)
    waits = [w for run_id in run_ids for w in stack_store.waits_for_run(run_id)]
    documents = [w for w in waits if w.stage == Stage.documents]
    assert len(documents) == 3 and len({w.request_id for w in documents}) == 1, "the runs shared one query"
    assert all(w.status == "consumed" for w in waits), [(w.stage, w.status) for w in waits]
    assert sandbox_control.get("/document-query-posts").json()[patient_id] == 3, "one start call per run"
