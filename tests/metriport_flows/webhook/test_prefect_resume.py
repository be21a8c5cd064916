"""The dispatcher resuming REAL suspended runs on a REAL Prefect server subprocess.

One module, module-scoped processes: a Prefect server (fresh PREFECT_HOME, free port), a `serve`
process for tests/metriport_flows/webhook/suspending_flow.py, `metriport-flows receiver --no-dispatcher` and
`metriport-flows dispatcher` (the scale-out shape), configured only through the environment, the webhook
key in a Prefect Secret block. Two orders: the message after the suspend, and the message right after the run registered its wait
(the resume is then refused as "not paused" until the run suspends; delivery keeps looking).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.blocks.system import Secret
from prefect.client.orchestration import SyncPrefectClient
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelled

from metriport_devtools.stack import Service, free_port, poll_until
from metriport_flows.client.api import MedicalApi
from metriport_flows.domain.stages import DocumentsReady, Outcome
from metriport_flows.settings import Settings
from metriport_flows.store import Store, WaitStatus, utcnow
from metriport_flows.webhook.events import WAIT_DELIVERED, WAIT_RESOLVED
from metriport_flows.webhook.prefect_gateway import PrefectGateway
from metriport_flows.webhook.protocols import ResumeAnswer
from metriport_flows.webhook.receiver import WEBHOOK_PATH
from metriport_flows.webhook.reconciler import ReconcileReport, reconcile_once
from tests.fixtures.busy_prefect import BusyOnce, client_waits_on_503
from tests.fixtures.emulator import api_key_for
from tests.fixtures.inbox import conversion_message, make_settings, serve, signed
from tests.metriport_flows.webhook.suspending_flow import DEPLOYMENT

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[3]
CLI = str(Path(sys.executable).parent / "metriport-flows")
KEY_BLOCK = "d-test-webhook-key"
WEBHOOK_KEY = "whk_from-a-secret-block"


@dataclass
class Stack:
    api_url: str
    receiver_url: str
    store: Store
    out_dir: Path

    def client(self) -> SyncPrefectClient:
        return SyncPrefectClient(api=self.api_url)


def _ok(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "METRIPORT_", "DATABASE_URL"))}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONUNBUFFERED="1", **extra)
    return env


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("prefect-resume")
    home, logs, out_dir = root / "prefect-home", root / "logs", root / "out"
    home.mkdir()
    out_dir.mkdir()
    port, receiver_port = free_port(), free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    database_url = f"sqlite:///{root / 'inbox.db'}"
    services: list[Service] = []

    def start(name: str, argv: list[str], **env: str) -> Service:
        service = Service(name, argv, _env(home, **env), logs / f"{name}.log", ROOT)
        services.append(service)
        service.start()
        return service

    try:
        server = start(
            "prefect-server",
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            PREFECT_UI_ENABLED="false",
            PREFECT_SERVER_LOGGING_LEVEL="WARNING",
        )
        poll_until(lambda: _ok(f"{api_url}/health"), timeout=90, what="starting Prefect", service=server)
        with temporary_settings({PREFECT_API_URL: api_url}):
            Secret(value=WEBHOOK_KEY).save(KEY_BLOCK, overwrite=True)
        served = start(
            "serve",
            [sys.executable, "-m", "tests.metriport_flows.webhook.suspending_flow"],
            PREFECT_API_URL=api_url,
            PREFECT_RUNNER_POLL_FREQUENCY="1",
            DATABASE_URL=database_url,
        )
        common = dict(
            PREFECT_API_URL=api_url,
            DATABASE_URL=database_url,
            WEBHOOK_KEY_BLOCK=KEY_BLOCK,
            DISPATCHER_POLL_SECONDS="0.2",
            BUNDLE_DIR=str(root / "bundles"),
        )
        receiver = start("receiver", [CLI, "receiver", "--no-dispatcher", "--port", str(receiver_port)], **common)
        dispatcher = start("dispatcher", [CLI, "dispatcher"], **common)
        poll_until(
            lambda: _ok(f"{api_url}/deployments/name/{DEPLOYMENT}"),
            timeout=90,
            what="serving the test deployment",
            service=served,
        )
        receiver_url = f"http://127.0.0.1:{receiver_port}"
        poll_until(lambda: _ok(f"{receiver_url}/healthz"), timeout=60, what="starting the receiver", service=receiver)
        store = Store(database_url)
        poll_until(
            lambda: store.get_heartbeat("dispatcher") is not None,
            timeout=60,
            what="starting the dispatcher",
            service=dispatcher,
        )
        yield Stack(api_url, receiver_url, store, out_dir)
        store.dispose()
    finally:
        for service in reversed(services):
            service.stop(grace_seconds=10)


def start_run(stack: Stack, patient_id: str, *, fail_after_register: bool = False) -> str:
    with temporary_settings({PREFECT_API_URL: stack.api_url}):
        run = run_deployment(
            DEPLOYMENT,
            parameters={
                "patient_id": patient_id,
                "out_dir": str(stack.out_dir),
                "fail_after_register": fail_after_register,
            },
            timeout=0,
            as_subflow=False,
        )
    return str(run.id)


def post(stack: Stack, message: dict) -> None:
    body, headers = signed(message, key=WEBHOOK_KEY)
    response = httpx.post(stack.receiver_url + WEBHOOK_PATH, content=body, headers=headers, timeout=10)
    assert response.status_code == 200, response.text


def until(probe, *, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.2)
    return value


def state_name(stack: Stack, run_id: str) -> str | None:
    with stack.client() as client:
        run = client.read_flow_run(run_id)
    return run.state.name if run.state else None


def related_events(stack: Stack, run_id: str) -> set[str]:
    body = {
        "filter": {
            "related": {"resources_in_roles": [[f"prefect.flow-run.{run_id}", "flow-run"]]},
            "event": {"prefix": ["metriport."]},
        },
        "limit": 50,
    }
    response = httpx.post(f"{stack.api_url}/events/filter", json=body, timeout=10)
    response.raise_for_status()
    return {event["event"] for event in response.json()["events"]}


def test_the_dispatcher_resumes_real_suspended_runs_in_either_order(stack: Stack) -> None:
    after_patient, before_patient = f"pat-{uuid.uuid4().hex[:8]}", f"pat-{uuid.uuid4().hex[:8]}"
    suspended_first = start_run(stack, after_patient)
    until(lambda: state_name(stack, suspended_first) == "Suspended", timeout=120, what="first run suspended")

    early = start_run(stack, before_patient)
    # the message comes as soon as this run has registered its wait, before it suspends: delivery keeps
    # looking until the run is suspended on the wait's key
    until(lambda: stack.store.waits_for_run(early), timeout=120, what="second run registered its wait")
    post(stack, conversion_message(before_patient, data={"flowRunId": early, "stage": "documents"}))
    post(stack, conversion_message(after_patient, data={"flowRunId": suspended_first, "stage": "documents"}))

    for run_id in (suspended_first, early):
        until(lambda: state_name(stack, run_id) == "Completed", timeout=150, what=f"run {run_id} completed")
        received = json.loads((stack.out_dir / f"{run_id}.json").read_text())
        [wait] = stack.store.waits_for_run(run_id)
        assert wait.status == WaitStatus.delivered and wait.delivered_at is not None
        assert received == wait.result and received["outcome"] == "ready"
        assert received["resolved_by"] == "webhook" and received["message_id"]
        until(
            lambda: (
                {WAIT_RESOLVED, WAIT_DELIVERED, "metriport.medical.document-conversion"}
                <= related_events(stack, run_id)
            ),
            timeout=30,
            what="events related to the run",
        )


def test_a_run_suspended_without_its_input_schema_is_still_resumed(stack: Stack) -> None:
    """A suspend saves the schema after the Suspended state; a process that ended in between (killed, the
    server away) left a run Prefect refused to resume for ever ("Run input schema not found")."""
    patient = f"pat-{uuid.uuid4().hex[:8]}"
    run_id = start_run(stack, patient)
    until(lambda: state_name(stack, run_id) == "Suspended", timeout=120, what="run suspended")
    with stack.client() as client:
        run = client.read_flow_run(run_id)
        assert run.state is not None and run.state.state_details.run_input_keyset
        client.delete_flow_run_input(run.id, run.state.state_details.run_input_keyset["schema"])
    post(stack, conversion_message(patient, data={"flowRunId": run_id, "stage": "documents"}))
    until(lambda: state_name(stack, run_id) == "Completed", timeout=150, what="run completed")
    [wait] = stack.store.waits_for_run(run_id)
    assert wait.status == WaitStatus.delivered
    assert json.loads((stack.out_dir / f"{run_id}.json").read_text()) == wait.result


def test_a_message_for_a_finished_wait_changes_nothing(stack: Stack) -> None:
    patient = f"pat-{uuid.uuid4().hex[:8]}"
    run_id = start_run(stack, patient)
    until(lambda: state_name(stack, run_id) == "Suspended", timeout=120, what="run suspended")
    first = conversion_message(patient, data={"flowRunId": run_id})
    post(stack, first)
    post(stack, first)  # the same delivery twice: one row
    until(lambda: state_name(stack, run_id) == "Completed", timeout=150, what="run completed")
    late = conversion_message(patient, status="failed", data={"flowRunId": run_id})
    post(stack, late)
    until(
        lambda: (row := stack.store.get_message(late["meta"]["messageId"])) and row.status == "done",
        timeout=30,
        what="late message recorded",
    )
    [wait] = stack.store.waits_for_run(run_id)
    assert wait.result["outcome"] == "ready" and wait.result["message_id"] == first["meta"]["messageId"]
    assert stack.store.get_message(late["meta"]["messageId"]).detail.startswith("late")


def cancel(stack: Stack, run_id: str) -> None:
    with stack.client() as client:
        client.set_flow_run_state(run_id, Cancelled(), force=True)
    until(lambda: state_name(stack, run_id) == "Cancelled", timeout=60, what=f"run {run_id} cancelled")


def test_waits_of_runs_that_ended_another_way_are_closed(stack: Stack, emulator_app, tmp_path: Path) -> None:
    failed = start_run(stack, f"pat-{uuid.uuid4().hex[:8]}", fail_after_register=True)
    until(lambda: state_name(stack, failed) == "Failed", timeout=120, what="run failed after registering")
    cancelled, resolved_late = (start_run(stack, f"pat-{uuid.uuid4().hex[:8]}") for _ in range(2))
    for run_id in (cancelled, resolved_late):
        until(lambda: state_name(stack, run_id) == "Suspended", timeout=120, what=f"run {run_id} suspended")
        cancel(stack, run_id)

    # a message that ends the wait of a cancelled run: the dispatcher's delivery closes the wait
    [late] = stack.store.waits_for_run(resolved_late)
    assert stack.store.resolve_wait(late.id, DocumentsReady(outcome=Outcome.ready))
    until(
        lambda: stack.store.get_wait(late.id).status == WaitStatus.abandoned,
        timeout=30,
        what="the delivery closed the resolved wait of a cancelled run",
    )

    # the reconciler closes the open waits of the failed and the cancelled run, then never asks again
    settings = make_settings(tmp_path, stack.store)
    after_soft_deadline = utcnow() + timedelta(minutes=6)
    first, second = asyncio.run(reconcile_twice(stack, emulator_app, settings, after_soft_deadline))
    assert first.abandoned == 2 and first.waits_checked == 0
    assert (second.abandoned, second.waits_checked) == (0, 0)
    for run_id in (failed, cancelled, resolved_late):
        [wait] = stack.store.waits_for_run(run_id)
        assert wait.status == WaitStatus.abandoned and wait.abandoned_at is not None
    assert stack.store.undelivered_waits(due_only=False) == []


async def reconcile_twice(
    stack: Stack, emulator_app: Any, settings: Settings, now: datetime
) -> tuple[ReconcileReport, ReconcileReport]:
    transport = httpx.ASGITransport(app=emulator_app)
    with temporary_settings({PREFECT_API_URL: stack.api_url}):
        async with (
            PrefectGateway() as gateway,
            MedicalApi("http://emulator.test", api_key_for("reconcile-ended"), transport=transport) as api,
        ):
            first = await reconcile_once(stack.store, api, gateway, settings, now)
            second = await reconcile_once(stack.store, api, gateway, settings, now)
    return first, second


def test_a_busy_server_s_503_goes_to_the_gateway_s_own_retries_at_once(stack: Stack) -> None:
    """Prefect's client waits 2 s after a 503 before its own retry (and even when it will not retry):
    the gateway's resume must see the 503 itself and retry within its own short backoff."""
    patient = f"pat-{uuid.uuid4().hex[:8]}"
    run_id = start_run(stack, patient)
    until(lambda: state_name(stack, run_id) == "Suspended", timeout=120, what="run suspended")
    [wait] = stack.store.waits_for_run(run_id)
    busy = BusyOnce(stack.api_url, "/resume")
    with client_waits_on_503() as client_waits, serve(busy.app) as proxy_url:
        answer = asyncio.run(resume_through(f"{proxy_url}/api", run_id, wait.pause_key))
    assert answer.accepted and busy.calls == busy.unavailable + 1 >= 2
    assert client_waits == []
    until(lambda: state_name(stack, run_id) == "Completed", timeout=150, what="run completed")
    assert stack.store.abandon_wait(wait.id)  # resumed by hand: its wait is closed, not left for the reconciler


async def resume_through(api_url: str, run_id: str, pause_key: str) -> ResumeAnswer:
    with temporary_settings({PREFECT_API_URL: api_url}):
        async with PrefectGateway() as gateway:
            return await gateway.resume(run_id, DocumentsReady(outcome=Outcome.ready))
