"""Receiver and dispatcher fixtures: a real uvicorn server on a free port, signed messages, and
recording stand-ins for Prefect and Metriport for the dispatcher's unit tests."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from pydantic import SecretStr

from metriport_flows.client.signing import SIGNATURE_HEADER, WebhookSigner, compact_json
from metriport_flows.settings import Settings
from metriport_flows.stages import StageResult
from metriport_flows.store import Store
from metriport_flows.webhook.events import PlannedEvent
from metriport_flows.webhook.prefect_gateway import ResumeAnswer, RunView
from metriport_flows.webhook.receiver import create_app

WEBHOOK_KEY = "whk_tëst-key-Ω"


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run an ASGI app on uvicorn in a thread on a free loopback port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


def make_settings(tmp_path: Path, store: Store, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        metriport_webhook_key=SecretStr(WEBHOOK_KEY), database_url=store.url, bundle_dir=tmp_path / "bundles",
        dispatcher_poll_seconds=0.1,
    )
    values.update(overrides)
    return Settings(**values)


def signed(payload: dict[str, Any] | bytes, key: str = WEBHOOK_KEY) -> tuple[bytes, dict[str, str]]:
    body = payload if isinstance(payload, bytes) else compact_json(payload)
    return body, {SIGNATURE_HEADER: WebhookSigner(key).sign(body), "content-type": "application/json"}


def meta(type_: str, *, request_id: str | None = None, data: dict[str, str] | None = None,
         message_id: str | None = None) -> dict[str, Any]:
    value: dict[str, Any] = {"messageId": message_id or str(uuid.uuid4())}
    if request_id:
        value["requestId"] = request_id
    value.update(when="2026-11-24T12:00:00.000Z", type=type_)
    if data is not None:
        value["data"] = data
    return value


def download_message(patient_id: str, *, documents: list[dict[str, Any]] | None = None, status: str = "completed",
                     **meta_args: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"patientId": patient_id}
    if status != "failed":
        item["documents"] = documents if documents is not None else []
    item["status"] = status
    return {"meta": meta("medical.document-download", **meta_args), "patients": [item]}


def conversion_message(patient_id: str, *, status: str = "completed", **meta_args: Any) -> dict[str, Any]:
    return {"meta": meta("medical.document-conversion", **meta_args),
            "patients": [{"patientId": patient_id, "status": status}]}


def xml_document(name: str = "JaneSmith.xml") -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "description": "C-CDA R2.1 Patient Record", "fileName": name,
            "status": "current", "mimeType": "application/xml", "size": 2048}


def pdf_document(name: str = "demo2.pdf") -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "fileName": name, "mimeType": "application/pdf", "size": "1024"}


@dataclass
class Receiver:
    base_url: str
    store: Store
    settings: Settings


@pytest.fixture
def receiver(store: Store, tmp_path: Path) -> Iterator[Receiver]:
    """The receiver alone (no dispatcher) on a real port, over the parametrized store."""
    settings = make_settings(tmp_path, store, receiver_max_body_bytes=64 * 1024)
    with serve(create_app(settings, store, run_dispatcher=False)) as base_url:
        yield Receiver(base_url, store, settings)


@dataclass
class RecordingGateway:
    """Prefect as the dispatcher sees it: runs in given states; records resumes and events."""

    runs: dict[str, RunView] = field(default_factory=dict)
    answers: dict[str, str] = field(default_factory=dict)
    resumes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    events: list[PlannedEvent] = field(default_factory=list)

    async def read_flow_run(self, flow_run_id: str) -> RunView | None:
        return self.runs.get(str(flow_run_id))

    async def resume(self, flow_run_id: str, run_input: StageResult) -> ResumeAnswer:
        self.resumes.append((str(flow_run_id), run_input.model_dump(mode="json")))
        status = self.answers.get(str(flow_run_id), "ACCEPT")
        if status == "ACCEPT":
            self.runs[str(flow_run_id)] = RunView("SCHEDULED", "Resuming", None)
        return ResumeAnswer(status, None if status == "ACCEPT" else "Cannot resume a flow run that is not paused.")

    def emit(self, planned: PlannedEvent) -> None:
        self.events.append(planned)

