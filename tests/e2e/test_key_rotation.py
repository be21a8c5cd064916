"""The webhook key rotates without a restart and without losing a message, end to end: the emulator
(Metriport's way: clear the webhook URL, set it again, get a new key), a receiver process reading its
key from a Prefect Secret block on the stack's Prefect server, messages sent all through the rotation,
then the reconciler's call (`POST /settings/webhook/retry`) for whatever failed in between."""

from __future__ import annotations

import base64
import os
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prefect.blocks.system import Secret
from prefect.settings import PREFECT_API_URL, temporary_settings

from metriport_devtools.stack import LocalStack, Service, free_port, poll_until
from metriport_flows.store import MessageStatus, Store
from metriport_flows.webhook.receiver import WEBHOOK_PATH
from tests.fixtures.sandbox import FACILITY

pytestmark = pytest.mark.e2e

CLI = str(Path(sys.executable).parent / "metriport-flows")
MESSAGES = 40
ROTATE_AFTER = 15
PATIENT = {
    "firstName": "Rota",
    "lastName": "Tion",
    "dob": "1970-01-01",
    "genderAtBirth": "F",
    "address": [{"addressLine1": "1 Main St", "city": "Springfield", "state": "IL", "zip": "62701", "country": "USA"}],
}


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, Store, str]]:
    """Where the receiver will listen, its own inbox, and a fresh Secret block name."""
    store = Store(f"sqlite:///{tmp_path / 'inbox.db'}")
    try:
        yield f"http://127.0.0.1:{free_port()}", store, f"rotation-{uuid.uuid4().hex[:12]}"
    finally:
        store.dispose()


def test_the_key_rotates_while_messages_arrive_and_none_is_lost(
    local_stack: LocalStack, tmp_path: Path, receiver: tuple[str, Store, str]
) -> None:
    base_url, store, block = receiver
    tenant_key = base64.b64encode(f"local:rotation-{uuid.uuid4().hex[:8]}".encode()).decode()
    api = httpx.Client(base_url=local_stack.emulator_url, headers={"x-api-key": tenant_key}, timeout=30)
    control = httpx.Client(base_url=f"{local_stack.emulator_url}/_sandbox", timeout=60)
    webhook_url = base_url + WEBHOOK_PATH

    def set_url(url: str) -> str | None:
        return api.post("/settings", json={"webhookUrl": url}).raise_for_status().json()["webhookKey"]

    def save_key(key: str) -> None:
        with temporary_settings({PREFECT_API_URL: local_stack.prefect_api_url}):
            Secret(value=key).save(block, overwrite=True)

    first_key = set_url(webhook_url)
    assert first_key
    save_key(first_key)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "METRIPORT_", "DATABASE_URL"))}
    env.update(
        PREFECT_API_URL=local_stack.prefect_api_url,
        WEBHOOK_KEY_BLOCK=block,
        DATABASE_URL=store.url,
        PYTHONUNBUFFERED="1",
    )
    argv = [CLI, "receiver", "--host", "127.0.0.1", "--port", base_url.rsplit(":", 1)[1], "--no-dispatcher"]
    service = Service("rotation-receiver", argv, env, tmp_path / "receiver.log", tmp_path)
    service.start()
    try:
        poll_until(lambda: _ok(f"{base_url}/healthz"), timeout=60, what="starting the receiver", service=service)
        facility = api.post("/medical/v1/facility", json=FACILITY).raise_for_status().json()["id"]
        patient = (
            api.post("/medical/v1/patient", params={"facilityId": facility}, json=PATIENT).raise_for_status().json()
        )["id"]
        sent: list[str] = []
        rotated = threading.Event()

        def send() -> None:
            for n in range(MESSAGES):
                answer = control.post("/notifications", json={"patientId": patient, "type": "patient.admit"})
                sent.append(answer.raise_for_status().json()["messageId"])
                if n == ROTATE_AFTER:
                    rotated.set()

        sender = threading.Thread(target=send)
        sender.start()
        rotated.wait(60)
        assert set_url("") is None  # Metriport's way: clear the URL ...
        new_key = set_url(webhook_url)  # ... and set it again: a new key
        assert new_key and new_key != first_key
        save_key(new_key)
        sender.join(120)
        assert len(sent) == MESSAGES
        requests: dict[str, dict[str, str]] = {}

        def reconcile_pass() -> bool:
            """What each reconciler pass does: failed deliveries? ask Metriport to re-send them."""
            assert control.post("/flush", params={"timeout": 60}).json()["idle"] is True
            requests.update({r["messageId"]: r for r in control.get("/webhook-requests").json()})
            if all(requests[m]["status"] == "success" for m in sent):
                return True
            api.post("/settings/webhook/retry").raise_for_status()
            return False

        poll_until(reconcile_pass, timeout=60, what="re-sending what failed during the rotation", service=service)
        stored = {row.message_id: row for row in store.list_messages(limit=10_000)}
        assert set(sent) <= set(stored)
        assert not any(row.status == MessageStatus.rejected for row in stored.values())
        log = (tmp_path / "receiver.log").read_text()
        assert first_key not in log and new_key not in log
    finally:
        service.stop(5.0)
        api.close()
        control.close()
