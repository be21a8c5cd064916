"""The receiver against a bare endpoint on the same server stack, side by side, on SQLite and PostgreSQL.

Run: .venv/bin/python bench/bench_receiver.py [MESSAGES] [IN_FLIGHT] [RATE]   (default 4000, 32, 200)

For each inbox database (SQLite; PostgreSQL too when TEST_DATABASE_URL is set) three uvicorn processes run
on free loopback ports: the bare endpoint (FastAPI, "read the body, answer 200"), the same mounted as a
plain Starlette route as the receiver mounts its webhook (a stricter anchor), and `metriport-flows
receiver --no-dispatcher`. A load generator in its own process, on raw keep-alive HTTP/1.1 connections
so that it costs little next to the servers, sends the same pre-signed bodies to both:

1. throughput: MESSAGES distinct messages with IN_FLIGHT in flight; messages/s of each and the ratio
   (goal: the receiver >= 0.5x the bare endpoint);
2. steady: RATE messages/s for 10 s on a fixed schedule (latency counted from the scheduled send, so a
   stall is not hidden); answer time p50 / p99 / max (goal: p99 <= 25 ms);
3. a duplicate storm: one message IN_FLIGHT times at once.
Then the rows in the inbox, which must be exactly the distinct messages sent (each stored once).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI, Request, Response
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from metriport_flows.client.signing import SIGNATURE_HEADER, WebhookSigner, compact_json
from metriport_flows.store import Store
from metriport_flows.webhook.receiver import WEBHOOK_PATH

KEY = "bench-webhook-key"
STEADY_SECONDS = 10.0
BARES = ("bare", "bare route")


def message(patient_id: str) -> bytes:
    documents = [
        {"id": str(uuid.uuid4()), "fileName": f"demo{i}.pdf", "mimeType": "application/pdf", "size": 1000}
        for i in range(7)
    ]
    meta = {
        "messageId": str(uuid.uuid4()),
        "requestId": str(uuid.uuid4()),
        "when": "2026-11-24T00:00:00.000Z",
        "type": "medical.document-download",
        "data": {"flowRunId": str(uuid.uuid4())},
    }
    return compact_json({"meta": meta, "patients": [{"patientId": patient_id, "documents": documents}]})


def request_bytes(body: bytes, signer: WebhookSigner) -> bytes:
    head = (
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
        f"{SIGNATURE_HEADER}: {signer.sign(body)}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one request on a keep-alive connection; the response's status."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


async def closed_loop(port: int, requests: list[bytes], in_flight: int) -> tuple[float, list[float]]:
    """Every request with `in_flight` connections each sending its next as soon as it has an answer."""
    queue = list(reversed(requests))
    latencies: list[float] = []

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while queue:
            started = time.perf_counter()
            status = await exchange(reader, writer, queue.pop())
            latencies.append(time.perf_counter() - started)
            assert status == 200, status
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(in_flight)))
    return time.perf_counter() - began, latencies


async def steady(port: int, requests: list[bytes], rate: float, in_flight: int) -> list[float]:
    """One request every 1/rate s on the next free connection; latency from the scheduled time."""
    connections: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(in_flight):
        connections.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    latencies: list[float] = []
    began = time.perf_counter()

    async def send(due: float, request: bytes) -> None:
        reader, writer = await connections.get()
        status = await exchange(reader, writer, request)
        latencies.append(time.perf_counter() - due)
        connections.put_nowait((reader, writer))
        assert status == 200, status

    sends = []
    for n, request in enumerate(requests):
        due = began + n / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        sends.append(asyncio.create_task(send(due, request)))
    await asyncio.gather(*sends)
    while not connections.empty():
        connections.get_nowait()[1].close()
    return latencies


def load(port: int, mode: str, requests: list[bytes], in_flight: int, rate: float) -> tuple[float, list[float]]:
    """In the load generator's own process: (seconds, latencies) of one phase."""
    if mode == "steady":
        return 0.0, asyncio.run(steady(port, requests, rate, in_flight))
    return asyncio.run(closed_loop(port, requests, in_flight))


def bare_app(plain_route: bool) -> FastAPI:
    """The issue's anchor, a FastAPI endpoint; with `plain_route`, mounted as the receiver mounts its own
    (a Starlette route, without FastAPI's parameter solving): the stricter anchor."""
    app = FastAPI()

    async def receive(request: Request) -> Response:
        await request.body()
        return Response(b'{"received":true}', media_type="application/json")

    if plain_route:
        app.router.add_route(WEBHOOK_PATH, receive, methods=["POST"])
    else:
        app.post(WEBHOOK_PATH)(receive)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve_bare(port: int, plain_route: bool) -> None:
    uvicorn.run(bare_app(plain_route), host="127.0.0.1", port=port, log_level="warning")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(port: int, process: subprocess.Popen[bytes] | multiprocessing.process.BaseProcess) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        alive = process.poll() is None if isinstance(process, subprocess.Popen) else process.is_alive()
        if time.monotonic() > deadline or not alive:
            raise RuntimeError("a server did not start")
        time.sleep(0.1)


def percentiles(latencies: list[float]) -> str:
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return f"p50 {cuts[49] * 1000:6.1f} ms  p99 {cuts[98] * 1000:6.1f} ms  max {max(latencies) * 1000:6.1f} ms"


def run(name: str, store: Store, messages: int, in_flight: int, rate: float) -> bool:
    ctx = multiprocessing.get_context("spawn")
    signer = WebhookSigner(KEY)
    distinct = [request_bytes(message(f"pat-{i % 50}"), signer) for i in range(messages)]
    paced = [request_bytes(message(f"pat-{i % 50}"), signer) for i in range(int(rate * STEADY_SECONDS))]
    storm = [request_bytes(message("pat-storm"), signer)] * in_flight
    ports = {"bare": free_port(), "bare route": free_port(), "receiver": free_port()}
    env = {**os.environ, "METRIPORT_WEBHOOK_KEY": KEY, "DATABASE_URL": store.url}
    command = [str(Path(sys.executable).parent / "metriport-flows"), "receiver", "--no-dispatcher"]
    receiver = subprocess.Popen([*command, "--port", str(ports["receiver"]), "--log-level", "warning"], env=env)
    bares = [ctx.Process(target=serve_bare, args=(ports[bare], bare == "bare route"), daemon=True) for bare in BARES]
    for bare in bares:
        bare.start()
    try:
        wait_healthy(ports["receiver"], receiver)
        for server, process in zip(BARES, bares, strict=True):
            wait_healthy(ports[server], process)
        with ctx.Pool(1) as generator:
            phase = {
                (server, mode): generator.apply(load, (port, mode, requests, in_flight, rate))
                for mode, requests in (("throughput", distinct), ("steady", paced), ("storm", storm))
                for server, port in ports.items()
            }
    finally:
        receiver.terminate()
        receiver.wait(timeout=30)
        for bare in bares:
            bare.terminate()
            bare.join(timeout=30)
    per_second = {server: messages / phase[(server, "throughput")][0] for server in ports}
    ratio = per_second["receiver"] / per_second["bare"]
    strict_ratio = per_second["receiver"] / per_second["bare route"]
    p99 = statistics.quantiles(phase[("receiver", "steady")][1], n=100, method="inclusive")[98]
    stored = sum(count for _, count, _ in store.backlog())
    expected = messages + len(paced) + 1
    print(f"{name}:")
    print(
        f"  throughput, {in_flight} in flight: bare {per_second['bare']:7.0f} msg/s   receiver {per_second['receiver']:7.0f} msg/s   ratio {ratio:.2f} (goal >= 0.5)"
    )
    print(
        f"  against a bare route mounted as the receiver's: {per_second['bare route']:7.0f} msg/s   ratio {strict_ratio:.2f}"
    )
    for server in ports:
        print(f"  steady {rate:g} msg/s, {server:<10}  {percentiles(phase[(server, 'steady')][1])}")
    print(f"  receiver p99 at {rate:g} msg/s: {p99 * 1000:.1f} ms (goal <= 25 ms)")
    print(f"  duplicate storm ({in_flight} at once), receiver: {percentiles(phase[('receiver', 'storm')][1])}")
    print(f"  rows stored: {stored} (expected {expected}: each distinct message once)")
    return stored == expected


def main(messages: int, in_flight: int, rate: float) -> int:
    ok = True
    with tempfile.TemporaryDirectory() as folder:
        sqlite = Store(f"sqlite:///{Path(folder) / 'inbox.db'}")
        sqlite.migrate()
        ok &= run("SQLite (WAL)", sqlite, messages, in_flight, rate)
        sqlite.dispose()
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        print("PostgreSQL: skipped (set TEST_DATABASE_URL)")
        return 0 if ok else 1
    schema, admin = f"bench_{uuid.uuid4().hex[:12]}", create_engine(url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        postgres = Store(
            make_url(url)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
        postgres.migrate()
        ok &= run("PostgreSQL", postgres, messages, in_flight, rate)
        postgres.dispose()
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    return 0 if ok else 1


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(
        main(
            int(args[0]) if args else 4000,
            int(args[1]) if len(args) > 1 else 32,
            float(args[2]) if len(args) > 2 else 200,
        )
    )
