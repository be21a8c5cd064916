"""The receiver over real HTTP (uvicorn on a free port) and a real database: verify, store, answer."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
from pydantic import SecretStr

from metriport_flows.client.signing import SIGNATURE_HEADER, compact_json
from metriport_flows.store import MessageStatus, Store
from metriport_flows.webhook.receiver import WEBHOOK_PATH, create_app
from tests.fixtures.inbox import (
    Receiver,
    download_message,
    make_settings,
    meta,
    serve,
    signed,
    xml_document,
)


def _count(store: Store) -> int:
    return sum(count for _, count, _ in store.backlog())


async def test_a_signed_message_is_stored_with_its_correlation_ids(receiver: Receiver) -> None:
    message = download_message(
        "pat-1", documents=[xml_document()], request_id="req-1", data={"flowRunId": "run-1", "stage": "documents"}
    )
    body, headers = signed(message)
    async with httpx.AsyncClient(base_url=receiver.base_url) as client:
        response = await client.post(WEBHOOK_PATH, content=body, headers=headers)
    assert response.status_code == 200
    assert response.json() == {"received": message["meta"]["messageId"], "duplicate": False}
    row = receiver.store.get_message(message["meta"]["messageId"])
    assert (row.type, row.patient_id, row.request_id, row.flow_run_id, row.stage) == (
        "medical.document-download",
        "pat-1",
        "req-1",
        "run-1",
        "documents",
    )
    assert row.body.encode() == body and row.status == MessageStatus.pending


async def test_fifty_parallel_deliveries_of_one_message_store_one_row(receiver: Receiver) -> None:
    body, headers = signed(download_message("pat-50", request_id="req-50"))
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=receiver.base_url, limits=limits, timeout=30) as client:
        responses = await asyncio.gather(*(client.post(WEBHOOK_PATH, content=body, headers=headers) for _ in range(50)))
    assert [r.status_code for r in responses] == [200] * 50
    assert sum(1 for r in responses if not r.json()["duplicate"]) == 1
    assert _count(receiver.store) == 1


async def test_unicode_body_is_verified_on_its_raw_bytes(receiver: Receiver) -> None:
    message = download_message("pat-ü", documents=[{**xml_document("JoséÑúñez.xml"), "description": "名前 ✓"}])
    body, headers = signed(message)
    assert "名前".encode() in body  # JSON.stringify leaves non-ASCII unescaped
    escaped = json.dumps(message, separators=(",", ":")).encode()  # same JSON, other bytes
    async with httpx.AsyncClient(base_url=receiver.base_url) as client:
        refused = await client.post(WEBHOOK_PATH, content=escaped, headers=headers)
        accepted = await client.post(WEBHOOK_PATH, content=body, headers=headers)
    assert refused.status_code == 401 and accepted.status_code == 200
    assert receiver.store.get_message(message["meta"]["messageId"]).patient_id == "pat-ü"


async def test_bad_signatures_are_refused_and_nothing_is_stored(receiver: Receiver) -> None:
    message = download_message("pat-sig")
    body, good = signed(message)
    _, wrong_key = signed(message, key="another-key")
    tampered = body.replace(b"pat-sig", b"pat-sih")
    async with httpx.AsyncClient(base_url=receiver.base_url) as client:
        answers = [
            await client.post(WEBHOOK_PATH, content=body, headers=wrong_key),
            await client.post(WEBHOOK_PATH, content=body, headers={SIGNATURE_HEADER: ""}),
            await client.post(WEBHOOK_PATH, content=body),
            await client.post(WEBHOOK_PATH, content=tampered, headers=good),
            await client.post(WEBHOOK_PATH, content=body, headers={SIGNATURE_HEADER: good[SIGNATURE_HEADER][:-1]}),
        ]
    assert [a.status_code for a in answers] == [401] * 5
    assert _count(receiver.store) == 0


async def test_ping_gets_its_pong_and_is_not_stored(receiver: Receiver) -> None:
    ping = {"ping": "V1StGXR8_Z5jdHi6B-myT", "meta": meta("ping")}
    body, headers = signed(ping)
    async with httpx.AsyncClient(base_url=receiver.base_url) as client:
        response = await client.post(WEBHOOK_PATH, content=body, headers=headers)
        unsigned = await client.post(WEBHOOK_PATH, content=body)
    assert response.status_code == 200 and response.json() == {"pong": "V1StGXR8_Z5jdHi6B-myT"}
    assert unsigned.status_code == 401
    assert _count(receiver.store) == 0


async def test_oversized_bodies_get_413_declared_or_streamed(receiver: Receiver) -> None:
    padding = "x" * (receiver.settings.receiver_max_body_bytes + 1)
    body, headers = signed({**download_message("pat-big"), "padding": padding})

    async def chunks():
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    async with httpx.AsyncClient(base_url=receiver.base_url) as client:
        declared = await client.post(WEBHOOK_PATH, content=body, headers=headers)
        streamed = await client.post(WEBHOOK_PATH, content=chunks(), headers=headers)
    assert declared.status_code == 413 and streamed.status_code == 413
    assert _count(receiver.store) == 0


async def test_not_json_or_no_message_id_gets_400_and_is_kept_as_rejected(receiver: Receiver) -> None:
    async with httpx.AsyncClient(base_url=receiver.base_url) as client:
        answers = []
        for raw in (
            b"not json {",
            b"[1,2]",
            compact_json({"meta": {"type": "medical.document-download"}}),
            compact_json({"patients": []}),
        ):
            body, headers = signed(raw)
            answers.append(await client.post(WEBHOOK_PATH, content=body, headers=headers))
    assert [a.status_code for a in answers] == [400] * 4
    assert [(status, count) for status, count, _ in receiver.store.backlog()] == [(MessageStatus.rejected, 4)]


async def test_unknown_types_are_stored(receiver: Receiver) -> None:
    message = {"meta": meta("network-query.hie"), "anything": {"x": 1}}
    body, headers = signed(message)
    async with httpx.AsyncClient(base_url=receiver.base_url) as client:
        response = await client.post(WEBHOOK_PATH, content=body, headers=headers)
    assert response.status_code == 200
    assert receiver.store.get_message(message["meta"]["messageId"]).type == "network-query.hie"


async def test_healthz_checks_the_database(receiver: Receiver, tmp_path: Path) -> None:
    async with httpx.AsyncClient(base_url=receiver.base_url) as client:
        healthy = await client.get("/healthz")
    assert healthy.status_code == 200 and healthy.json()["database"] == "ok"
    unreachable = Store("postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=2")
    settings = make_settings(tmp_path, unreachable)
    with serve(create_app(settings, unreachable, run_dispatcher=False)) as base_url:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            sick = await client.get("/healthz")
    assert sick.status_code == 503 and sick.json()["status"] == "unhealthy"


async def test_a_message_the_inbox_cannot_store_gets_503_not_a_500(tmp_path: Path) -> None:
    """The database is away: Metriport must see a failed delivery it can retry, not a crash."""
    unreachable = Store("postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=2")
    body, headers = signed(download_message("pat-1", request_id="req-1"))
    with serve(create_app(make_settings(tmp_path, unreachable), unreachable, run_dispatcher=False)) as base_url:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            response = await client.post(WEBHOOK_PATH, content=body, headers=headers)
    assert response.status_code == 503 and "inbox unavailable" in response.json()["detail"]


async def test_the_key_never_reaches_reprs_or_settings_dumps(tmp_path: Path, sqlite_store: Store) -> None:
    settings = make_settings(tmp_path, sqlite_store, metriport_webhook_key=SecretStr("s3cr3t-" + uuid.uuid4().hex))
    app = create_app(settings, sqlite_store, run_dispatcher=False)
    with serve(app):
        assert "s3cr3t" not in repr(app.state.signer)
    assert "s3cr3t" not in repr(settings) and "s3cr3t" not in settings.model_dump_json()
