"""The reconciler end to end: the session stack (Prefect server, runner serving every deployment, emulator,
receiver + dispatcher), with Metriport misbehaving through the emulator's faults.

The `reconcile/every-minute` schedule is paused for these tests so that each pass happens exactly when
the test asks for it: once as a run of that deployment, otherwise as `metriport-flows reconcile` in a
subprocess with the stack's environment (both are how operators run it), or in this process where speed
matters.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import string
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_URL, temporary_settings

from metriport_devtools.stack import LocalStack
from metriport_flows.domain.stages import Outcome, ResolvedBy, Stage
from metriport_flows.store import Store, Wait, utcnow
from metriport_flows.webhook.reconciler import (
    HEARTBEAT,
    ReconcileReport,
    reconcile_with,
)
from tests.fixtures.sandbox import FACILITY
from tests.fixtures.stack import (
    RECONCILE_DEPLOYMENT,
    reconcile_schedule_paused,
    run_deployment_on,
    run_patient_records,
    until,
    wait_for_final_state,
    wait_for_state_name,
)

pytestmark = pytest.mark.e2e

RECONCILE = RECONCILE_DEPLOYMENT
DOWNLOAD, CONVERSION, CONSOLIDATED = (
    "medical.document-download",
    "medical.document-conversion",
    "medical.consolidated-data",
)
STACK_ENV_PREFIXES = ("PREFECT_", "METRIPORT_", "DATABASE_URL", "BUNDLE_DIR", "HOT_WINDOW_")


@pytest.fixture(scope="module")
def facility_id(stack_api: httpx.Client, sandbox_control: httpx.Client) -> str:
    sandbox_control.post("/config", json={"patient_limit": 1000}).raise_for_status()
    return stack_api.post("/medical/v1/facility", json=FACILITY).raise_for_status().json()["id"]


@pytest.fixture(scope="module")
def schedule_paused(stack_prefect: SyncPrefectClient) -> Iterator[None]:
    with reconcile_schedule_paused(stack_prefect):
        yield


@pytest.fixture
def faults(sandbox_control: httpx.Client) -> Iterator[Callable[..., None]]:
    """Set the emulator's faults; they are cleared again after the test whatever happens."""

    def set_faults(**values: Any) -> None:
        sandbox_control.post("/faults", json=values).raise_for_status()

    yield set_faults
    sandbox_control.post("/faults", json={"spec": ""}).raise_for_status()


def new_patient(api: httpx.Client, facility_id: str, first_name: str) -> str:
    """A fresh patient; a seed first name gets the sandbox's seven documents."""
    body = {
        "firstName": first_name,
        "lastName": "R" + "".join(random.choices(string.ascii_lowercase, k=10)),
        "dob": "1979-07-07",
        "genderAtBirth": "F",
        "address": [
            {"addressLine1": "9 Test Rd", "city": "Springfield", "state": "IL", "zip": "62701", "country": "USA"}
        ],
    }
    response = api.post("/medical/v1/patient", params={"facilityId": facility_id}, json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def deliveries(control: httpx.Client, patient_id: str) -> list[dict[str, Any]]:
    return control.get("/deliveries", params={"patient_id": patient_id}).json()


def dropped(control: httpx.Client, patient_id: str, *types: str) -> bool:
    failed = {d["type"] for d in deliveries(control, patient_id) if d["kind"] == "first" and d["status"] == "failure"}
    return set(types) <= failed


def reconcile_cli(stack: LocalStack) -> dict[str, Any]:
    """`metriport-flows reconcile --json` in a subprocess configured like the stack's components."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(STACK_ENV_PREFIXES)} | stack.env
    command = [str(Path(sys.executable).with_name("metriport-flows")), "reconcile", "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=stack.root)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def reconcile_here(stack: LocalStack, store: Store) -> ReconcileReport:
    """One pass in this process, against the stack's Prefect server, emulator and inbox."""
    with temporary_settings(updates={PREFECT_API_URL: stack.prefect_api_url}):
        return asyncio.run(reconcile_with(stack.settings(), store))


def wait_of(store: Store, run_id: str, stage: Stage, attempt: int = 1) -> Wait | None:
    return next((w for w in store.waits_for_run(run_id) if w.stage == stage and w.attempt == attempt), None)


def past_soft_deadline(store: Store, run_id: str, stage: Stage, attempt: int = 1) -> Wait | None:
    wait = wait_of(store, run_id, stage, attempt)
    return wait if wait is not None and wait.request_id and wait.soft_deadline <= utcnow() else None


def test_dropped_webhooks_are_recovered_through_retry(
    local_stack, stack_api, sandbox_control, stack_store, stack_prefect, facility_id, schedule_paused, faults
) -> None:
    patient_id = new_patient(stack_api, facility_id, "Jane")
    faults(drop=1.0)
    run_id = run_patient_records(local_stack, {"patient_id": patient_id})
    until(
        lambda: dropped(sandbox_control, patient_id, DOWNLOAD, CONVERSION),
        timeout=90,
        what="both document messages to be dropped",
    )
    wait_for_state_name(local_stack, run_id, "Suspended", timeout=90)
    faults()  # Metriport works again, but never re-sends by itself: the run would wait forever

    reconcile_run = run_deployment_on(local_stack, RECONCILE, {})
    assert wait_for_final_state(local_stack, reconcile_run, timeout=120).state.type == StateType.COMPLETED
    report = stack_store.get_heartbeat(HEARTBEAT).detail
    assert report["webhook_retry_requested"] is True and report["webhooks_failed"] >= 2

    run = wait_for_final_state(local_stack, run_id, timeout=150)
    assert run.state.type == StateType.COMPLETED, (run.state.name, run.state.message)
    retried = {d["type"]: d for d in deliveries(sandbox_control, patient_id) if d["kind"] == "retry"}
    assert {DOWNLOAD, CONVERSION} <= set(retried) and all(d["status"] == "success" for d in retried.values())
    documents = wait_of(stack_store, run_id, Stage.documents).result_model()
    assert (documents.outcome, documents.resolved_by) == (Outcome.ready, ResolvedBy.webhook)
    assert documents.message_id in {d["message_id"] for d in retried.values()}, "a re-sent message ended it"
    logs = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[reconcile_run]))
    until(
        lambda: any("Reconcile pass" in log.message for log in stack_prefect.read_logs(log_filter=logs)),
        timeout=30,
        what="the reconcile run's log",
    )


def test_stuck_document_query_is_ended_by_the_hard_deadline(
    local_stack, stack_api, stack_store, facility_id, schedule_paused, faults
) -> None:
    patient_id = new_patient(stack_api, facility_id, "Chris")
    faults(stuck_patients=[patient_id])
    run_id = run_patient_records(
        local_stack, {"patient_id": patient_id, "soft_deadline_seconds": 1, "hard_deadline_seconds": 6}
    )
    wait = until(
        lambda: past_soft_deadline(stack_store, run_id, Stage.documents),
        timeout=90,
        what="the documents wait past its soft deadline",
    )
    early = reconcile_here(local_stack, stack_store)
    assert early.still_processing >= 1 and wait_of(stack_store, run_id, Stage.documents).result is None
    until(lambda: utcnow() > wait.hard_deadline, timeout=30, what="the hard deadline")

    assert reconcile_here(local_stack, stack_store).timed_out >= 1
    run = wait_for_final_state(local_stack, run_id, timeout=150)
    assert run.state.type == StateType.FAILED, (run.state.name, run.state.message)
    assert "hard deadline" in run.state.message and patient_id in run.state.message
    result = wait_of(stack_store, run_id, Stage.documents).result_model()
    assert (result.outcome, result.resolved_by) == (Outcome.timeout, ResolvedBy.reconciler)
    assert wait_of(stack_store, run_id, Stage.consolidated) is None, "nothing started after the timeout"


def test_expired_bundle_url_is_re_requested(
    local_stack, stack_api, sandbox_control, stack_store, facility_id, schedule_paused, faults
) -> None:
    patient_id = new_patient(stack_api, facility_id, "Ollie")
    faults(drop=1.0, url_lifetime=0)  # every message lost, every signed URL born expired
    run_id = run_patient_records(
        local_stack, {"patient_id": patient_id, "soft_deadline_seconds": 2, "hard_deadline_seconds": 300}
    )
    until(
        lambda: (
            past_soft_deadline(stack_store, run_id, Stage.documents) and dropped(sandbox_control, patient_id, DOWNLOAD)
        ),
        timeout=90,
        what="the document query to finish",
    )
    reconcile_cli(local_stack)  # GET /document/query says done (and the retried messages say so too)
    assert wait_of(stack_store, run_id, Stage.documents).result_model().outcome == Outcome.ready

    first = until(
        lambda: (
            dropped(sandbox_control, patient_id, CONSOLIDATED)
            and past_soft_deadline(stack_store, run_id, Stage.consolidated)
        ),
        timeout=120,
        what="the first consolidated query to finish",
    )
    faults()  # the first query's URL was signed already expired; the re-requested one will be fine
    reconcile_cli(local_stack)

    run = wait_for_final_state(local_stack, run_id, timeout=150)
    assert run.state.type == StateType.COMPLETED, (run.state.name, run.state.message)
    expired = stack_store.get_wait(first.id).result_model()
    assert expired.outcome == Outcome.expired and expired.request_id == first.request_id
    again = wait_of(stack_store, run_id, Stage.consolidated, attempt=2)
    assert again is not None and again.request_id != first.request_id and again.pause_key != first.pause_key
    bundle = again.result_model()
    assert bundle.outcome == Outcome.ready and Path(bundle.bundle_path).is_file()
    served = [d for d in sandbox_control.get("/downloads").json() if first.request_id in d["path"]]
    assert served and all(d["status"] == 403 for d in served), "the expired URL was refused, never served"
