"""Shared helpers for emulator tests: a recording webhook receiver on loopback and API shortcuts."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

ADDRESS = {"addressLine1": "1 Main St", "city": "Springfield", "state": "OR", "zip": "97477", "country": "USA"}
FACILITY = {"name": "Test Clinic", "npi": "1234567893", "address": ADDRESS}
JANE = {"firstName": "Jane", "lastName": "Smith", "dob": "1996-02-10", "genderAtBirth": "F",
        "address": [{"addressLine1": "123 Arsenal St", "city": "Phoenix", "state": "AZ", "zip": "85300",
                     "country": "USA"}]}


def person(first: str = "Zed", last: str = "Nobody", dob: str = "1980-01-01") -> dict:
    return {"firstName": first, "lastName": last, "dob": dob, "genderAtBirth": "M", "address": [ADDRESS]}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """A real HTTP server on 127.0.0.1:0 that records raw bodies and answers as told."""

    status: int = 200
    answer_pong: bool = True
    redirect: bool = False
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                if receiver.delay:
                    time.sleep(receiver.delay)
                if receiver.redirect:
                    self.send_response(302)
                    self.send_header("location", "http://127.0.0.1:9/elsewhere")
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                reply = b"{}"
                payload = json.loads(body or b"{}")
                if receiver.answer_pong and "ping" in payload:
                    reply = json.dumps({"pong": payload["ping"]}).encode()
                self.send_response(receiver.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/metriport/webhook"

    def messages(self, type_: str | None = None) -> list[Received]:
        with self.lock:
            items = list(self.received)
        return [r for r in items if type_ is None or r.json()["meta"]["type"] == type_]

    def wait_for(self, count: int, type_: str | None = None, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages(type_)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"expected {count} {type_ or ''} messages, got {len(self.messages(type_))}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def setup_patient(client: httpx.AsyncClient, demographics: dict | None = None) -> tuple[str, str]:
    """Create a facility and one patient; return (facility_id, patient_id)."""
    facility = await client.post("/medical/v1/facility", json=FACILITY)
    assert facility.status_code == 201, facility.text
    facility_id = facility.json()["id"]
    patient = await client.post("/medical/v1/patient", params={"facilityId": facility_id}, json=demographics or JANE)
    assert patient.status_code == 201, patient.text
    return facility_id, patient.json()["id"]


async def set_webhook(client: httpx.AsyncClient, url: str) -> dict:
    response = await client.post("/settings", json={"webhookUrl": url})
    assert response.status_code == 200, response.text
    return response.json()


async def flush(client: httpx.AsyncClient) -> None:
    response = await client.post("/_sandbox/flush")
    assert response.json()["idle"] is True
