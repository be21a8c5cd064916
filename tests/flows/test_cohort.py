"""cohort-refresh: patient lists, run parameters, status classification, the report; then end to end."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import httpx
import pytest
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.settings import PREFECT_API_URL, temporary_settings

from metriport_devtools.rates import most_in_any_interval
from metriport_flows.domain.cohort import (
    CohortInputError,
    CohortParams,
    CohortReport,
    PatientRun,
    check_patient_ids,
    read_patient_ids_csv,
    stage_counts,
    unique,
)
from metriport_flows.domain.patient_records import PatientRecordsParams
from metriport_flows.domain.rate_limits import Operation, RateLimitSettings
from metriport_flows.domain.stages import Outcome
from metriport_flows.store import Store
from metriport_flows.store.models import Wait
from tasks.cohort import run_status, start_patient_runs
from tasks.limits import ensure_rate_limits
from tests.fixtures.busy_prefect import BusyOnce, client_waits_on_503
from tests.fixtures.inbox import serve
from tests.fixtures.patients import (
    artifacts_of,
    create_facility,
    emulator_settings,
    log_text,
    new_patient,
    runs_of,
)
from tests.fixtures.stack import run_deployment_on, wait_for_final_state


def test_ids_come_from_the_named_column_in_any_case_without_duplicates():
    text = "firstCol,PatientId\nx,p-1\ny,p-2\nz,p-1\nw,\n"
    assert read_patient_ids_csv(text) == ["p-1", "p-2"]
    assert read_patient_ids_csv("metriportId,status\n0195a,succeeded\n") == ["0195a"]


def test_a_single_column_file_without_a_known_header_is_all_ids():
    assert read_patient_ids_csv("p-1\np-2\n") == ["p-1", "p-2"]


def test_a_bad_id_names_its_line_not_its_value():
    with pytest.raises(CohortInputError, match="line 3: not a Metriport patient id") as raised:
        read_patient_ids_csv("id\np-1\nJane Smith\n")
    assert "Jane" not in str(raised.value)


def test_a_wide_csv_without_an_id_column_is_refused():
    with pytest.raises(CohortInputError, match="patientid, metriportid, id"):
        read_patient_ids_csv("first,last\na,b\n")


def test_check_patient_ids_reports_positions_only():
    assert check_patient_ids(unique([" a ", "b", "a"])) == ["a", "b"]
    with pytest.raises(CohortInputError, match=r"positions \[2\]"):
        check_patient_ids(["a", "x y"])


def test_no_ids_means_every_patient_and_run_parameters_match_patient_records():
    assert CohortParams().all_patients is True
    assert CohortParams(patient_ids=["p-1"]).all_patients is False
    params = CohortParams(patient_ids=["p-1"], conversion_type="pdf", hot_window_seconds=2, hard_deadline_seconds=90)
    parameters = params.run_parameters("p-1")
    assert parameters == {
        "request": {
            "patient_id": "p-1",
            "conversion_type": "pdf",
            "hot_window_seconds": 2.0,
            "hard_deadline_seconds": 90,
        }
    }
    assert PatientRecordsParams.model_validate(parameters["request"]).patient_id == "p-1"


def test_run_parameters_refuse_an_id_patient_records_would_refuse():
    with pytest.raises(ValueError):
        CohortParams().run_parameters("not an id")


def _run(state_type: StateType | None, name: str = "") -> FlowRun:
    state = State(type=state_type, name=name or state_type.value.title()) if state_type else None
    return FlowRun(id=uuid4(), flow_id=uuid4(), name="r", state=state)


@pytest.mark.parametrize(
    ("state_type", "name", "status"),
    [
        (StateType.COMPLETED, "", "completed"),
        (StateType.FAILED, "", "failed"),
        (StateType.CRASHED, "", "failed"),
        (StateType.CANCELLED, "", "failed"),
        (StateType.PAUSED, "Suspended", "waiting"),
        (StateType.SCHEDULED, "Resuming", "waiting"),
        (StateType.RUNNING, "", "waiting"),
        (None, "", "waiting"),
    ],
)
def test_only_final_states_leave_the_waiting_list(state_type, name, status):
    assert run_status(_run(state_type, name)) == status


def _wait(stage: str, outcome: Outcome | None) -> Wait:
    now = datetime.now(UTC)
    return Wait(
        flow_run_id=str(uuid4()),
        stage=stage,
        pause_key=f"{stage}-1",
        outcome=outcome,
        soft_deadline=now + timedelta(minutes=1),
        hard_deadline=now + timedelta(hours=1),
    )


def test_stage_counts_split_open_waits_from_their_outcomes():
    waits = [
        _wait("documents", Outcome.ready),
        _wait("documents", Outcome.ready),
        _wait("documents", Outcome.timeout),
        _wait("consolidated", None),
    ]
    assert stage_counts(waits) == {"consolidated": {"open": 1}, "documents": {"ready": 2, "timeout": 1}}


def test_the_report_sorts_runs_and_its_markdown_holds_ids_and_counts_only():
    runs = [
        PatientRun(patient_id="p-1", flow_run_id="r-1", status="completed"),
        PatientRun(patient_id="p-2", flow_run_id="r-2", status="failed", state_name="Failed"),
        PatientRun(patient_id="p-3", flow_run_id="r-3", status="waiting", state_name="Suspended"),
    ]
    report = CohortReport.from_runs(runs, not_started=["p-4"])
    report.stages = {"documents": {"ready": 2, "open": 1}}
    assert report.counts() == {"completed": 1, "failed": 1, "waiting": 1, "not_started": 1}
    assert report.patients == 4
    text = report.markdown()
    assert "| documents | 1 | 2 | 0 | 0 | 0 |" in text
    assert "| p-2 | r-2 | Failed |" in text and "| p-3 | r-3 | Suspended |" in text and "- p-4" in text


# -- end to end: 30 patients under Metriport's rate limits ---------------------------------------------

COHORT_SIZE = 30
# The emulator's fixed window is shortened from 60 s to 6 s, with 7 document queries and 7 consolidated
# queries per window (Metriport: 20/min), so the cohort spans several windows. The runner starts up to 9
# runs at once, each opening with a document query, so without the limits the first window would see more
# than 7 starts and answers 429. Our schedule gets the same window and a margin in proportion to the
# machine's load (the default is 1 s in 60 s).
WINDOW_SECONDS, PER_WINDOW, MARGIN_SECONDS = 6.0, 7, 0.5
LIMITED = {Operation.document_query: "documentQuery", Operation.consolidated_query: "consolidatedDataQuery"}


@pytest.fixture
def cohort_patients(stack_api, sandbox_control) -> list[str]:
    facility_id = create_facility(stack_api, sandbox_control)
    with emulator_settings(sandbox_control, rate_limits={"patientCreateOrUpdate": 10_000}):
        return [new_patient(stack_api, facility_id, "Robin") for _ in range(COHORT_SIZE)]


@pytest.fixture
def rate_limits_like_the_emulator(local_stack):
    """Our limits for the short window, in the stack's store; the stack's own limits again afterwards."""
    store = Store(local_stack.database_url)
    settings = RateLimitSettings(
        document_query=PER_WINDOW,
        consolidated_query=PER_WINDOW,
        window_seconds=WINDOW_SECONDS,
        margin_seconds=MARGIN_SECONDS,
        _env_file=None,
    )
    before = [store.rate_limit(operation) for operation in Operation]
    ensure_rate_limits(settings, store)
    yield settings
    for limit in before:
        if limit is not None:
            store.set_rate_limit(limit)
    store.dispose()


def emulator_rate_limits(sandbox_control: httpx.Client) -> dict[str, dict]:
    response = sandbox_control.get("/rate-limits")
    response.raise_for_status()
    return response.json()


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_thirty_patients_under_metriports_rate_limits_all_complete_and_no_429_surfaces(
    local_stack,
    stack_api,
    sandbox_control,
    stack_prefect,
    cohort_patients,
    rate_limits_like_the_emulator,
) -> None:
    began = datetime.now(UTC).timestamp()
    refused_before = {op: seen.get("refused", 0) for op, seen in emulator_rate_limits(sandbox_control).items()}
    # A long hot window: this test is about rate limits, so no run should pay for a suspend and resume.
    params = {
        "patient_ids": cohort_patients,
        "manage_rate_limits": False,
        "create_interval_seconds": 0.2,
        "poll_seconds": 3,
        "follow_minutes": 8,
        "hot_window_seconds": 60,
    }
    limits = {"documentQuery": PER_WINDOW, "consolidatedDataQuery": PER_WINDOW}
    with emulator_settings(sandbox_control, rate_limits=limits, rate_limit_window=WINDOW_SECONDS):
        run_id = run_deployment_on(local_stack, "cohort-refresh/nightly", {"params": params})
        cohort = wait_for_final_state(local_stack, run_id, timeout=540)
        seen = emulator_rate_limits(sandbox_control)
    assert cohort.state.type == StateType.COMPLETED, cohort.state.message
    report = artifacts_of(stack_prefect, run_id)["cohort-refresh"]
    assert f"completed **{COHORT_SIZE}** · failed **0** · still waiting **0**" in report
    assert f"| documents | 0 | {COHORT_SIZE} |" in report and f"| consolidated | 0 | {COHORT_SIZE} |" in report
    keys = [f"cohort:{run_id}:{patient_id}" for patient_id in cohort_patients]
    runs = runs_of(stack_prefect, "patient-records/on-demand", idempotency_key={"any_": keys})
    assert sorted(r.parameters["request"]["patient_id"] for r in runs) == sorted(cohort_patients)
    assert all(r.state.type == StateType.COMPLETED for r in runs)
    assert "RateLimited" not in log_text(stack_prefect, [str(r.id) for r in runs])  # no start call was refused
    # Metriport's own view: one start per patient and stage, none refused, no window over the limit.
    for name in LIMITED.values():
        admitted = [t for t in seen[name]["admitted"] if t >= began]
        assert seen[name]["refused"] == refused_before.get(name, 0), name
        assert len(admitted) == COHORT_SIZE and most_in_any_interval(admitted, WINDOW_SECONDS) <= PER_WINDOW


@pytest.mark.e2e
def test_the_stacks_nightly_refresh_is_declared_but_inactive_and_reconcile_is_scheduled(stack_prefect) -> None:
    """A test or the chaos run crossing 02:00 UTC must not get a refresh of every patient it created."""
    nightly = stack_prefect.read_deployment_by_name("cohort-refresh/nightly")
    assert [(getattr(s.schedule, "cron", None), s.active) for s in nightly.schedules] == [("0 2 * * *", False)]
    reconcile = stack_prefect.read_deployment_by_name("reconcile/every-minute")
    assert reconcile.schedules and all(s.active for s in reconcile.schedules)


@pytest.mark.e2e
def test_a_busy_server_s_503_on_a_create_goes_to_the_cohort_s_own_retries_at_once(
    local_stack, stack_api, sandbox_control
) -> None:
    """Prefect's client sleeps 2 s, 4, 8, 16 after 503s before its own retry, and one create of a cohort
    of 100 met 30 s of that: the create must see the 503 itself and retry within the task's short backoff."""
    patient_id = new_patient(stack_api, create_facility(stack_api, sandbox_control))
    parameters = {patient_id: CohortParams(patient_ids=[patient_id]).run_parameters(patient_id)}
    busy = BusyOnce(local_stack.prefect_api_url, "/create_flow_run")
    with client_waits_on_503() as client_waits, serve(busy.app) as proxy_url:
        with temporary_settings({PREFECT_API_URL: f"{proxy_url}/api"}):
            runs, not_started = asyncio.run(start_patient_runs(f"busy-{uuid4()}", parameters, 0.0))
    assert not_started == [] and [run.patient_id for run in runs] == [patient_id]
    assert busy.calls == busy.unavailable + 1 >= 2
    assert client_waits == []
    finished = wait_for_final_state(local_stack, runs[0].flow_run_id, timeout=180)
    assert finished.state is not None and finished.state.is_completed(), finished.state
