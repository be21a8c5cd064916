"""patient-records end to end: a real Prefect server and runner, the emulator, the receiver and dispatcher.

Every test creates fresh patients (unique last names; the sandbox picks seed data by first name) and
checks, besides the final state: that each stage attempt has one wait with one resolution which the
run consumed (store), that Metriport saw one start per stage attempt (the emulator's deliveries carry
one requestId per query), and that the stored bundle's sha256 is what the emulator served.
Faults and delays are the emulator's and global, so a test that sets them restores them.
"""

from __future__ import annotations

import hashlib
import random
import string
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import FlowRun, StateType
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from metriport_devtools.stack import LocalStack
from metriport_flows.domain.patient_records import PatientRecordsResult
from metriport_flows.domain.stages import ConsolidatedReady, Outcome, ResolvedBy, Stage
from metriport_flows.store import Store, Wait, WaitStatus
from tests.fixtures.sandbox import FACILITY
from tests.fixtures.stack import (
    run_patient_records,
    wait_for_final_state,
    wait_for_state_name,
)

pytestmark = pytest.mark.e2e

DOWNLOAD, CONVERSION, CONSOLIDATED = (
    "medical.document-download",
    "medical.document-conversion",
    "medical.consolidated-data",
)
RUN_TIMEOUT = 120.0  # a deadline, not a sleep: generous for a loaded 2-core machine


# -- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def facility_id(stack_api: httpx.Client, sandbox_control: httpx.Client) -> str:
    sandbox_control.post("/config", json={"patient_limit": 1000}).raise_for_status()
    response = stack_api.post("/medical/v1/facility", json=FACILITY)
    response.raise_for_status()
    return response.json()["id"]


@contextmanager
def emulator(
    control: httpx.Client,
    *,
    faults: dict[str, Any] | None = None,
    delay: tuple[float, float] | None = None,
    mode: str | None = None,
) -> Iterator[None]:
    """Set the emulator's faults, delay and mode for the block, then restore the stack's defaults."""
    try:
        if faults is not None:
            control.post("/faults", json=faults).raise_for_status()
        if delay is not None or mode is not None:
            config = {"delay": list(delay)} if delay is not None else {}
            control.post("/config", json={**config, **({"mode": mode} if mode else {})}).raise_for_status()
        yield
    finally:
        control.post("/faults", json={"spec": ""}).raise_for_status()
        control.post("/config", json={"delay": [0, 0], "mode": "sandbox"}).raise_for_status()


def new_patient(api: httpx.Client, facility_id: str, first_name: str) -> str:
    last_name = "E" + "".join(random.choices(string.ascii_lowercase, k=10))
    body = {
        "firstName": first_name,
        "lastName": last_name,
        "dob": "1980-05-17",
        "genderAtBirth": "F",
        "address": [
            {"addressLine1": "9 Test Rd", "city": "Springfield", "state": "IL", "zip": "62701", "country": "USA"}
        ],
    }
    response = api.post("/medical/v1/patient", params={"facilityId": facility_id}, json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def run_all(stack: LocalStack, requests: list[dict[str, Any]]) -> list[FlowRun]:
    """Start one run per request, then wait for all of them to end (they run concurrently)."""
    run_ids = [run_patient_records(stack, request) for request in requests]
    with ThreadPoolExecutor(len(run_ids)) as pool:
        return list(pool.map(lambda run_id: wait_for_final_state(stack, run_id, timeout=RUN_TIMEOUT), run_ids))


def state_names(prefect: SyncPrefectClient, run: FlowRun) -> list[str]:
    return [state.name for state in prefect.read_flow_run_states(run.id)]


def deliveries(control: httpx.Client, patient_id: str) -> list[dict[str, Any]]:
    return control.get("/deliveries", params={"patient_id": patient_id}).json()


def started_request_ids(control: httpx.Client, patient_id: str, message_type: str) -> set[str]:
    """One requestId per query Metriport ran: its messages (first sends and duplicates) carry it."""
    return {d["request_id"] for d in deliveries(control, patient_id) if d["type"] == message_type and d["request_id"]}


def assert_each_stage_delivered_once(
    store: Store, control: httpx.Client, run: FlowRun, patient_id: str, expected: list[tuple[str, int]]
) -> list[Wait]:
    """One wait per stage attempt, resolved once and consumed by the run; one Metriport query each."""
    waits = store.waits_for_run(run.id)
    assert [(w.stage, w.attempt) for w in waits] == expected
    for wait in waits:
        assert wait.resolved_at is not None and wait.request_id, wait
        assert wait.status == WaitStatus.consumed, (wait.stage, wait.status)
    documents = [w for w in waits if w.stage == Stage.documents]
    consolidated = [w for w in waits if w.stage == Stage.consolidated]
    assert started_request_ids(control, patient_id, DOWNLOAD) == {w.request_id for w in documents}
    if consolidated:
        assert started_request_ids(control, patient_id, CONSOLIDATED) == {w.request_id for w in consolidated}
    return waits


def assert_bundle_is_what_was_served(control: httpx.Client, wait: Wait) -> ConsolidatedReady:
    result = wait.result_model()
    assert isinstance(result, ConsolidatedReady) and result.outcome == Outcome.ready
    if result.empty:
        assert result.bundle_path is None
        return result
    stored = Path(result.bundle_path).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == result.sha256
    served = {
        d["sha256"]
        for d in control.get("/downloads").json()
        if d["request_id"] == wait.request_id and d["status"] == 200
    }
    assert served == {result.sha256}
    return result


def assert_completed(run: FlowRun) -> None:
    assert run.state is not None and run.state.type == StateType.COMPLETED, (run.state.name, run.state.message)


def assert_failed(run: FlowRun, message: str) -> None:
    assert run.state is not None and run.state.type == StateType.FAILED, (run.state.name, run.state.message)
    assert message in (run.state.message or ""), run.state.message


def both_stages(attempts: int = 1) -> list[tuple[str, int]]:
    return [("documents", 1)] + [("consolidated", attempt) for attempt in range(1, attempts + 1)]


# -- the tests -----------------------------------------------------------------------------------


def test_seed_patients_in_json_pdf_and_html(
    local_stack: LocalStack,
    stack_api: httpx.Client,
    sandbox_control: httpx.Client,
    stack_store: Store,
    stack_prefect: SyncPrefectClient,
    facility_id: str,
) -> None:
    patients = {
        kind: new_patient(stack_api, facility_id, name)
        for kind, name in (("json", "Jane"), ("pdf", "Chris"), ("html", "Ollie"))
    }
    runs = run_all(local_stack, [{"patient_id": p, "conversion_type": kind} for kind, p in patients.items()])
    for (kind, patient_id), run in zip(patients.items(), runs):
        assert_completed(run)
        waits = assert_each_stage_delivered_once(stack_store, sandbox_control, run, patient_id, both_stages())
        result = assert_bundle_is_what_was_served(sandbox_control, waits[-1])
        assert not result.empty and result.bundle_path.endswith(f".{kind}")
        documents = waits[0].result_model()
        assert documents.outcome == Outcome.ready
        assert {d["type"] for d in deliveries(sandbox_control, patient_id)} >= {DOWNLOAD, CONVERSION, CONSOLIDATED}
    artifacts = stack_prefect.read_artifacts()
    assert {f"patient-records-{p}" for p in patients.values()} <= {a.key for a in artifacts}


def test_webhooks_that_arrive_before_the_run_suspends(
    local_stack: LocalStack,
    stack_api: httpx.Client,
    sandbox_control: httpx.Client,
    stack_store: Store,
    facility_id: str,
) -> None:
    """No delay and no hot window: the dispatcher's resolution races the suspend; nothing is lost."""
    patient_id = new_patient(stack_api, facility_id, "Kyla")
    (run,) = run_all(local_stack, [{"patient_id": patient_id, "hot_window_seconds": 0}])
    assert_completed(run)
    waits = assert_each_stage_delivered_once(stack_store, sandbox_control, run, patient_id, both_stages())
    assert_bundle_is_what_was_served(sandbox_control, waits[-1])


def test_no_documents_and_an_empty_bundle_complete_with_zero_resources(
    local_stack: LocalStack,
    stack_api: httpx.Client,
    sandbox_control: httpx.Client,
    stack_store: Store,
    facility_id: str,
) -> None:
    """A patient the sandbox does not know gets a download message with no documents and no conversion
    message; a seed patient filtered to the future gets an empty bundle."""
    unknown = new_patient(stack_api, facility_id, "Robin")
    filtered = new_patient(stack_api, facility_id, "Jane")
    runs = run_all(
        local_stack,
        [{"patient_id": unknown}, {"patient_id": filtered, "date_from": "2999-01-01", "resources": ["Condition"]}],
    )
    for patient_id, run in zip((unknown, filtered), runs):
        assert_completed(run)
        waits = assert_each_stage_delivered_once(stack_store, sandbox_control, run, patient_id, both_stages())
        assert assert_bundle_is_what_was_served(sandbox_control, waits[-1]).empty
    assert CONVERSION not in {d["type"] for d in deliveries(sandbox_control, unknown)}
    assert stack_store.waits_for_run(runs[0].id)[0].result_model().documents == 0


def test_duplicated_and_reordered_webhooks(
    local_stack: LocalStack,
    stack_api: httpx.Client,
    sandbox_control: httpx.Client,
    stack_store: Store,
    facility_id: str,
) -> None:
    with emulator(sandbox_control, faults={"duplicate": 1.0, "reorder": 1.0, "reorder_delay": 1.0}):
        patients = [new_patient(stack_api, facility_id, name) for name in ("Chris", "Casey")]
        runs = run_all(local_stack, [{"patient_id": p} for p in patients])
    for patient_id, run in zip(patients, runs):
        assert_completed(run)
        waits = assert_each_stage_delivered_once(stack_store, sandbox_control, run, patient_id, both_stages())
        assert_bundle_is_what_was_served(sandbox_control, waits[-1])
        kinds = [d["kind"] for d in deliveries(sandbox_control, patient_id)]
        assert kinds.count("duplicate") == kinds.count("first") >= 2


def test_a_slow_reply_outlasts_the_hot_window_and_the_run_is_resumed(
    local_stack: LocalStack,
    stack_api: httpx.Client,
    sandbox_control: httpx.Client,
    stack_store: Store,
    stack_prefect: SyncPrefectClient,
    facility_id: str,
) -> None:
    slow = local_stack.hot_window_seconds + 3
    with emulator(sandbox_control, delay=(slow, slow)):
        patient_id = new_patient(stack_api, facility_id, "Jane")
        (run,) = run_all(local_stack, [{"patient_id": patient_id}])
    assert_completed(run)
    names = state_names(stack_prefect, run)
    assert names.count("Suspended") == 2 and names.count("Resuming") == 2, names
    waits = assert_each_stage_delivered_once(stack_store, sandbox_control, run, patient_id, both_stages())
    assert all(w.delivered_at is not None for w in waits)
    assert_bundle_is_what_was_served(sandbox_control, waits[-1])


def test_a_failed_document_query_fails_the_run(
    local_stack: LocalStack,
    stack_api: httpx.Client,
    sandbox_control: httpx.Client,
    stack_store: Store,
    facility_id: str,
) -> None:
    with emulator(sandbox_control, faults={"dq_failed": 1.0}, mode="production"):
        patient_id = new_patient(stack_api, facility_id, "Ollie")
        (run,) = run_all(local_stack, [{"patient_id": patient_id}])
    assert_failed(run, f"for patient {patient_id} ended failed")
    assert_each_stage_delivered_once(stack_store, sandbox_control, run, patient_id, [("documents", 1)])
    assert started_request_ids(sandbox_control, patient_id, CONSOLIDATED) == set()


def test_a_bundle_url_that_expires_twice_fails_the_run(
    local_stack: LocalStack,
    stack_api: httpx.Client,
    sandbox_control: httpx.Client,
    stack_store: Store,
    facility_id: str,
) -> None:
    with emulator(sandbox_control, faults={"url_lifetime": 0}):
        patient_id = new_patient(stack_api, facility_id, "Kyla")
        (run,) = run_all(local_stack, [{"patient_id": patient_id}])
    assert_failed(run, "expired 2 times")
    waits = assert_each_stage_delivered_once(stack_store, sandbox_control, run, patient_id, both_stages(2))
    assert [w.result_model().outcome for w in waits[1:]] == [Outcome.expired, Outcome.expired]
    refused = [
        d for d in sandbox_control.get("/downloads").json() if d["status"] == 403 and f"/{patient_id}/" in d["path"]
    ]
    assert len(refused) >= 2


def test_a_failed_consolidated_query_fails_the_run(
    local_stack: LocalStack,
    stack_api: httpx.Client,
    sandbox_control: httpx.Client,
    stack_store: Store,
    facility_id: str,
) -> None:
    with emulator(sandbox_control, faults={"consolidated_failed": 1.0}):
        patient_id = new_patient(stack_api, facility_id, "Andreas")
        (run,) = run_all(local_stack, [{"patient_id": patient_id}])
    waits = assert_each_stage_delivered_once(stack_store, sandbox_control, run, patient_id, both_stages())
    assert_failed(run, f"Consolidated query {waits[1].request_id} for patient {patient_id} failed")
    assert waits[1].result_model().outcome == Outcome.failed
    assert not [d for d in sandbox_control.get("/downloads").json() if d["request_id"] == waits[1].request_id]


def test_a_person_resumes_a_stuck_wait_from_the_ui_form(
    local_stack: LocalStack,
    stack_api: httpx.Client,
    sandbox_control: httpx.Client,
    stack_store: Store,
    stack_prefect: SyncPrefectClient,
    facility_id: str,
) -> None:
    """Metriport never answers (a stuck query); a person resumes the suspended run with outcome timeout,
    as the UI's Resume form does. The run records that input as the resolution and fails clearly."""
    patient_id = new_patient(stack_api, facility_id, "Jane")
    with emulator(sandbox_control, faults={"stuck_patients": [patient_id]}):
        run_id = run_patient_records(local_stack, {"patient_id": patient_id})
        wait_for_state_name(local_stack, run_id, "Suspended", timeout=RUN_TIMEOUT)
        # Suspended comes a moment before the run saves its input schema; until then Prefect answers REJECT
        # ("Run input schema not found") and the run stays suspended, so resume again, as a person would.
        resume = Retrying(
            stop=stop_after_delay(30),
            wait=wait_fixed(0.5),
            retry_error_callback=lambda s: s,
            retry=retry_if_result(lambda answer: answer.status.value != "ACCEPT"),
        )
        accepted = resume(
            stack_prefect.resume_flow_run, run_id, run_input={"outcome": "timeout", "detail": "no answer"}
        )
        assert getattr(accepted, "status", None) is not None and accepted.status.value == "ACCEPT", accepted
        run = wait_for_final_state(local_stack, run_id, timeout=RUN_TIMEOUT)
    assert_failed(run, f"Document query for patient {patient_id} passed its hard deadline: no answer")
    (wait,) = stack_store.waits_for_run(run_id)
    result = wait.result_model()
    assert (wait.status, result.outcome, result.resolved_by) == (
        WaitStatus.consumed,
        Outcome.timeout,
        ResolvedBy.manual,
    )
    assert started_request_ids(sandbox_control, patient_id, DOWNLOAD) == set()
    logs = run_logs(stack_prefect, run_id, "Wait documents-1 ended")
    assert "Wait documents-1 ended timeout (resolved by manual, read from the resume input)" in logs
    assert logs.count("Wait documents-1: no answer") == 1, "the resumed run watched the hot window again"


def run_logs(prefect: SyncPrefectClient, run_id: str, expected: str) -> str:
    """The run's log lines, once one containing `expected` has arrived (logs are shipped in the background)."""
    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[uuid.UUID(run_id)]))

    def lines() -> str:
        return "\n".join(log.message for log in prefect.read_logs(log_filter=log_filter, limit=200))

    retrying = Retrying(
        stop=stop_after_delay(30),
        wait=wait_fixed(0.5),
        retry=retry_if_result(lambda text: expected not in text),
        retry_error_callback=lambda s: s,
    )
    outcome = retrying(lines)
    return outcome if isinstance(outcome, str) else outcome.outcome.result()


def test_a_wait_past_its_hard_deadline_fails_the_run(
    local_stack: LocalStack,
    stack_api: httpx.Client,
    sandbox_control: httpx.Client,
    stack_store: Store,
    stack_prefect: SyncPrefectClient,
    facility_id: str,
    reconcile_paused: None,
) -> None:
    """Metriport never answers; the reconciler's hard-deadline check resolves the wait as timeout and the
    dispatcher resumes the suspended run with it. The scheduled pass is paused: passing the 2 s deadline
    during the 3 s hot window, it ended the run before it ever suspended (seen in CI)."""
    from tests.e2e.test_reconcile_e2e import reconcile_here

    patient_id = new_patient(stack_api, facility_id, "Chris")
    with emulator(sandbox_control, faults={"stuck_patients": [patient_id]}):
        run_id = run_patient_records(
            local_stack, {"patient_id": patient_id, "soft_deadline_seconds": 1, "hard_deadline_seconds": 2}
        )
        wait_for_state_name(local_stack, run_id, "Suspended", timeout=RUN_TIMEOUT)
        report = reconcile_here(local_stack, stack_store)
        assert report.timed_out >= 1, report
        run = wait_for_final_state(local_stack, run_id, timeout=RUN_TIMEOUT)
    assert_failed(run, f"Document query for patient {patient_id} passed its hard deadline")
    (wait,) = stack_store.waits_for_run(run_id)
    assert (wait.status, wait.result_model().resolved_by) == (WaitStatus.consumed, ResolvedBy.reconciler)
    assert wait.delivered_at is not None and "Resuming" in state_names(stack_prefect, run)


def test_an_expired_bundle_url_is_re_requested_under_a_new_attempt(
    local_stack: LocalStack,
    stack_api: httpx.Client,
    sandbox_control: httpx.Client,
    stack_store: Store,
    facility_id: str,
) -> None:
    """The first consolidated reply's URL is already expired; the run asks again (attempt 2, pause key
    consolidated-2) and the second reply, signed after the test restored normal URLs, is stored."""
    patient_id = new_patient(stack_api, facility_id, "Ollie")
    with emulator(sandbox_control, faults={"url_lifetime": 0}, delay=(2, 2)):
        run_id = run_patient_records(local_stack, {"patient_id": patient_id})
        first = wait_for(
            lambda: next(
                (w for w in stack_store.waits_for_run(run_id) if w.stage == Stage.consolidated and w.resolved_at), None
            )
        )
        sandbox_control.post("/faults", json={"spec": ""}).raise_for_status()
        run = wait_for_final_state(local_stack, run_id, timeout=RUN_TIMEOUT)
    assert first.result_model().outcome == Outcome.expired
    assert_completed(run)
    waits = assert_each_stage_delivered_once(stack_store, sandbox_control, run, patient_id, both_stages(2))
    assert_bundle_is_what_was_served(sandbox_control, waits[-1])
    result = PatientRecordsResult.model_validate(run.state.result())
    assert (result.consolidated_attempts, result.consolidated_request_id) == (2, waits[-1].request_id)
    assert result.total_resources > 0 and result.bundle.sha256 == waits[-1].result_model().sha256
    assert set(result.stage_seconds) == {"documents-1", "consolidated-1", "consolidated-2"}


def wait_for(probe: Callable[[], Any], timeout: float = RUN_TIMEOUT) -> Any:
    """Poll `probe` every 0.1 s until it returns something; fail after `timeout` seconds."""
    retrying = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(0.1),
        reraise=True,
        retry=retry_if_result(lambda value: value is None),
    )
    value = retrying(probe)
    assert value is not None
    return value
