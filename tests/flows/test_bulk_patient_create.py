"""bulk-patient-create: its artifact text (plain), then end to end on the session stack: a CSV becomes
patients and a cohort refresh of them; a bad CSV fails before anything is uploaded; an import that never
completes is ended by the reconciler at the wait's hard deadline."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import StateType
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from metriport_devtools.stack import LocalStack
from metriport_flows.domain.bulk_create import BulkCreateSummary, result_markdown
from metriport_flows.domain.bulk_csv import ResultRow
from metriport_flows.domain.stages import Outcome, Stage
from metriport_flows.store import Store
from tests.fixtures.patients import artifacts_of, create_facility, letters, runs_of
from tests.fixtures.stack import (
    run_deployment_on,
    wait_for_final_state,
    wait_for_state_name,
)

DEPLOYMENT = "bulk-patient-create/on-demand"
HEADER = "externalId,firstName,lastName,dob,gender,addressLine1,city,state,zip"


def test_the_artifact_lists_failed_rows_by_line_external_id_and_reason():
    summary = BulkCreateSummary(request_id="job-1", rows=3, succeeded=2, failed=1, result_path="/x.csv")
    text = result_markdown(summary, [ResultRow(4, "e-3", None, "failed", "Invalid | dob")])
    assert "rows **3** · created **2** · failed **1**" in text
    assert "| 4 | e-3 | Invalid / dob |" in text


def until(condition, timeout: float) -> None:
    """Poll `condition` every 0.25 s until it holds; fail after `timeout` seconds."""
    Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(0.25),
        retry=retry_if_result(lambda ok: not ok),
        reraise=True,
        retry_error_callback=lambda _: pytest.fail(f"condition not met in {timeout} s"),
    )(condition)


def csv_file(tmp_path: Path, rows: list[str]) -> str:
    path = tmp_path / f"patients-{letters(6)}.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return str(path)


def person(n: int) -> str:
    return f"x-{letters(6)},Sam,B{letters()},1970-0{n}-11,M,{n} Elm St,Springfield,IL,62701"


@pytest.fixture(scope="module")
def facility_id(stack_api: httpx.Client, sandbox_control: httpx.Client) -> str:
    return create_facility(stack_api, sandbox_control)


@pytest.mark.e2e
def test_a_csv_becomes_patients_and_a_cohort_refresh_of_them(
    local_stack: LocalStack,
    stack_api: httpx.Client,
    stack_prefect: SyncPrefectClient,
    stack_store: Store,
    facility_id: str,
    tmp_path: Path,
) -> None:
    params = {
        "csv_path": csv_file(tmp_path, [person(n) for n in (1, 2, 3)]),
        "facility_id": facility_id,
        "start_cohort": True,
    }
    run_id = run_deployment_on(local_stack, DEPLOYMENT, {"params": params})
    run = wait_for_final_state(local_stack, run_id, timeout=90)
    assert run.state.type == StateType.COMPLETED, run.state.message
    (wait,) = stack_store.waits_for_run(run_id)
    assert (wait.stage, wait.outcome, wait.pause_key) == (Stage.bulk_create, Outcome.ready, "bulk-create-1")
    assert wait.progress.get("status") == "processing"
    result_csv = Path(wait.result["result_path"]).read_text().splitlines()
    created = [line.split(",")[-3] for line in result_csv[1:]]
    assert len(created) == 3 and all(line.endswith(",succeeded,") for line in result_csv[1:])
    for patient_id in created:
        assert stack_api.get(f"/medical/v1/patient/{patient_id}").status_code == 200
    artifact = artifacts_of(stack_prefect, run_id)["bulk-patient-create"]
    assert "created **3**" in artifact and "Sam" not in artifact and "Elm" not in artifact
    (cohort,) = runs_of(stack_prefect, "cohort-refresh/nightly", idempotency_key={"any_": [f"bulk-create:{run_id}"]})
    assert cohort.parameters["params"]["patient_ids"] == created
    cohort = wait_for_final_state(local_stack, str(cohort.id), timeout=120)
    assert cohort.state.type == StateType.COMPLETED, cohort.state.message
    report = artifacts_of(stack_prefect, str(cohort.id))["cohort-refresh"]
    assert "completed **3** · failed **0** · still waiting **0**" in report


@pytest.mark.e2e
def test_an_invalid_csv_fails_the_run_before_anything_is_uploaded(
    local_stack: LocalStack,
    stack_prefect: SyncPrefectClient,
    stack_store: Store,
    facility_id: str,
    sandbox_control: httpx.Client,
    tmp_path: Path,
) -> None:
    imports_before = len(sandbox_control.get("/deliveries", params={"type": "medical.bulk-patient-create"}).json())
    bad = person(1).replace("1970-01-11", "11/01/1970").replace(",IL,", ",ZZ,")
    params = {"csv_path": csv_file(tmp_path, [person(2), bad]), "facility_id": facility_id}
    run = wait_for_final_state(local_stack, run_deployment_on(local_stack, DEPLOYMENT, {"params": params}), 60)
    assert run.state.type == StateType.FAILED
    assert "line 3, dob: must be a past date as YYYY-MM-DD" in run.state.message
    assert "line 3, state: not a 2-letter US state or territory" in run.state.message
    assert "11/01/1970" not in run.state.message
    assert "| 3 | dob |" in artifacts_of(stack_prefect, str(run.id))["bulk-csv-problems"]
    assert stack_store.waits_for_run(str(run.id)) == []
    imports_after = len(sandbox_control.get("/deliveries", params={"type": "medical.bulk-patient-create"}).json())
    assert imports_after == imports_before


@pytest.mark.e2e
def test_an_import_that_never_completes_ends_at_the_hard_deadline(
    local_stack: LocalStack,
    stack_store: Store,
    sandbox_control: httpx.Client,
    facility_id: str,
    tmp_path: Path,
    reconcile_paused: None,
) -> None:
    """The test's own reconcile run is the pass that ends the wait (the scheduled one is paused)."""
    params = {
        "csv_path": csv_file(tmp_path, [person(4)]),
        "facility_id": facility_id,
        "hot_window_seconds": 0,
        "soft_deadline_seconds": 2,
        "hard_deadline_seconds": 4,
    }
    try:
        sandbox_control.post("/faults", json={"spec": "stuck_dq=1"}).raise_for_status()
        run_id = run_deployment_on(local_stack, DEPLOYMENT, {"params": params})
        wait_for_state_name(local_stack, run_id, "Suspended", timeout=60)
    finally:
        sandbox_control.post("/faults", json={"spec": ""}).raise_for_status()
    (wait,) = stack_store.waits_for_run(run_id)
    until(lambda: stack_store.get_wait(wait.id).progress.get("status") == "processing", timeout=30)
    until(lambda: datetime.now(UTC) > wait.hard_deadline, timeout=30)
    assert stack_store.get_wait(wait.id).outcome is None
    reconcile = run_deployment_on(local_stack, "reconcile/every-minute", {})
    assert wait_for_final_state(local_stack, reconcile, timeout=60).state.type == StateType.COMPLETED
    run = wait_for_final_state(local_stack, run_id, timeout=60)
    assert run.state.type == StateType.FAILED
    assert "timeout" in run.state.message and wait.request_id in run.state.message
    assert stack_store.get_wait(wait.id).outcome == Outcome.timeout
