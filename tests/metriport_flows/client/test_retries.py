"""Transport behaviour: which calls are retried on 429 / 5xx / dropped connections, and where the API key goes.

A tiny scripted server stands in here because the emulator's faults are random per operation; these tests
need an exact sequence of answers. Everything else is tested against the emulator itself.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from httpx_retries import Retry

from metriport_flows.client.api import API_KEY_HEADER, MedicalApi, default_retry
from metriport_flows.client.errors import RateLimited, ServerError
from metriport_flows.settings import Settings

KEY = "bG9jYWw6ZGVtby10ZW5hbnQ="
PROGRESS = {"download": {"status": "processing"}, "requestId": "r1", "startedAt": "2026-01-01T00:00:00Z"}


class Script:
    """Canned answers per path, consumed in order; the last one repeats. Records every request."""

    def __init__(self) -> None:
        self.answers: dict[str, deque[Response]] = defaultdict(deque)
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []

    def on(self, path: str, *answers: Response) -> None:
        self.answers[path].extend(answers)

    def calls(self, path: str) -> int:
        return sum(1 for _, p, _, _ in self.seen if p == path)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE"])
        async def answer(request: Request, path: str) -> Response:
            path = "/" + path
            self.seen.append((request.method, path, dict(request.headers), await request.body()))
            queue = self.answers[path]
            return queue.popleft() if len(queue) > 1 else queue[0]

        return app


def ok(body: object) -> Response:
    return Response(httpx.Response(200, json=body).content, 200, media_type="application/json")


def fast_retry(total: int = 3) -> Retry:
    return default_retry(total=total, backoff_factor=0.01, max_backoff_wait=2.0)


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
async def api(script: Script) -> AsyncIterator[MedicalApi]:
    transport = httpx.ASGITransport(app=script.app())
    async with MedicalApi("http://metriport.test", KEY, transport=transport, retry=fast_retry()) as client:
        yield client


async def test_429_with_retry_after_is_retried_then_succeeds(api: MedicalApi, script: Script) -> None:
    script.on(
        "/medical/v1/document/query",
        Response(
            "Too many patient document query starts, please try again later.",
            429,
            headers={"Retry-After": "1"},
            media_type="text/plain",
        ),
        ok(PROGRESS),
    )
    started = time.monotonic()
    progress = await api.start_document_query("p1", metadata={"flowRunId": "f1"})
    assert progress.request_id == "r1" and progress.is_processing
    assert script.calls("/medical/v1/document/query") == 2
    assert time.monotonic() - started >= 0.9  # waited as told, not the 10 ms backoff
    method, _, headers, body = script.seen[-1]
    assert method == "POST" and headers[API_KEY_HEADER] == KEY
    assert body == b'{"metadata":{"flowRunId":"f1"}}'


async def test_5xx_is_retried_with_backoff(api: MedicalApi, script: Script) -> None:
    script.on("/medical/v1/document/query", Response(status_code=503), Response(status_code=502), ok(PROGRESS))
    assert (await api.get_document_query("p1")).request_id == "r1"
    assert script.calls("/medical/v1/document/query") == 3


async def test_persistent_5xx_becomes_server_error_after_the_budget(api: MedicalApi, script: Script) -> None:
    script.on("/medical/v1/patient/p1", Response('{"status":500,"title":"Internal Server Error"}', 500))
    with pytest.raises(ServerError) as caught:
        await api.get_patient("p1")
    assert caught.value.status == 500 and caught.value.title == "Internal Server Error"
    assert script.calls("/medical/v1/patient/p1") == 4  # first try + 3 retries


async def test_persistent_429_becomes_rate_limited_with_retry_after(script: Script) -> None:
    script.on("/medical/v1/patient", Response("Too many requests", 429, headers={"Retry-After": "0"}))
    transport = httpx.ASGITransport(app=script.app())
    async with MedicalApi("http://metriport.test", KEY, transport=transport, retry=fast_retry(1)) as api:
        with pytest.raises(RateLimited) as caught:
            await api.list_patients()
    assert caught.value.retry_after == 0 and caught.value.detail == "Too many requests"
    assert script.calls("/medical/v1/patient") == 2


async def test_non_idempotent_post_is_not_retried_on_5xx_but_is_on_429(api: MedicalApi, script: Script) -> None:
    job = {"requestId": "j1", "facilityId": "f1", "status": "waiting", "uploadUrl": "http://s3.test/u"}
    script.on("/medical/v1/patient/bulk", Response(status_code=500))
    with pytest.raises(ServerError):
        await api.start_bulk_patient_create("f1")
    assert script.calls("/medical/v1/patient/bulk") == 1
    script.answers["/medical/v1/patient/bulk"] = deque(
        [Response("slow down", 429, headers={"Retry-After": "0"}), ok(job)]
    )
    assert (await api.start_bulk_patient_create("f1", dry_run=True)).request_id == "j1"
    assert script.calls("/medical/v1/patient/bulk") == 3


async def test_api_key_goes_only_to_the_api_never_to_file_urls(api: MedicalApi, script: Script, tmp_path) -> None:
    script.on("/bucket/file.json", Response(b'{"resourceType":"Bundle"}', 200, media_type="application/json"))
    script.on("/bucket/upload", Response(status_code=200))
    await api.download("http://s3.test/bucket/file.json?X-Amz-Signature=x", tmp_path / "b.json")
    await api.upload_bulk_csv("http://s3.test/bucket/upload?X-Amz-Signature=y", b"firstName\nA\n")
    for method, path, headers, body in script.seen:
        assert API_KEY_HEADER not in headers, path
    assert script.seen[-1][0] == "PUT" and script.seen[-1][2]["content-type"] == "text/csv"
    assert KEY not in repr(api) and "***" in repr(api)


async def test_dropped_connection_is_retried_over_real_loopback() -> None:
    """The first connection closes without an answer (RemoteProtocolError); the second gets one."""
    connections = 0
    body = b'{"webhookEnabled":true,"webhookStatusDetail":"OK"}'

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        if connections > 1:
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        settings = Settings(metriport_base_url=f"http://127.0.0.1:{port}", metriport_api_key=KEY)
        async with MedicalApi.from_settings(settings, retry=fast_retry()) as api:
            status = await api.get_webhook_status()
    finally:
        server.close()
        await server.wait_closed()
    assert status.webhook_enabled is True and status.webhook_status_detail == "OK"
    assert connections == 2
