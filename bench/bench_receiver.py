"""How fast the receiver answers Metriport, side by side on SQLite and PostgreSQL.

Run: .venv/bin/python bench/bench_receiver.py [MESSAGES] [CONCURRENCY]   (default 1000, 20)
Starts `metriport-flows receiver --no-dispatcher` on a free port over a temp SQLite inbox and, when
TEST_DATABASE_URL is set, over a fresh PostgreSQL schema; posts MESSAGES distinct signed messages with
CONCURRENCY in flight, then the same message CONCURRENCY times at once (a duplicate storm). Prints
messages/s and answer latency p50/p99/max: Metriport gives up at 5 s, so max is the figure to watch.
"""

from __future__ import annotations

import asyncio
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
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from metriport_flows.client.signing import SIGNATURE_HEADER, WebhookSigner, compact_json
from metriport_flows.store import Store
from metriport_flows.webhook.receiver import WEBHOOK_PATH

KEY = "bench-webhook-key"


def message(patient_id: str) -> bytes:
    return compact_json(
        {
            "meta": {
                "messageId": str(uuid.uuid4()),
                "requestId": str(uuid.uuid4()),
                "when": "2026-11-24T00:00:00.000Z",
                "type": "medical.document-download",
                "data": {"flowRunId": str(uuid.uuid4())},
            },
            "patients": [
                {
                    "patientId": patient_id,
                    "documents": [
                        {
                            "id": str(uuid.uuid4()),
                            "fileName": f"demo{i}.pdf",
                            "mimeType": "application/pdf",
                            "size": 1000,
                        }
                        for i in range(7)
                    ],
                    "status": "completed",
                }
            ],
        }
    )


async def post_all(base_url: str, bodies: list[bytes], concurrency: int) -> list[float]:
    signer, slots, latencies = WebhookSigner(KEY), asyncio.Semaphore(concurrency), []
    async with httpx.AsyncClient(
        base_url=base_url, timeout=30, limits=httpx.Limits(max_connections=concurrency)
    ) as client:

        async def post(body: bytes) -> None:
            async with slots:
                started = time.perf_counter()
                response = await client.post(WEBHOOK_PATH, content=body, headers={SIGNATURE_HEADER: signer.sign(body)})
                latencies.append(time.perf_counter() - started)
                response.raise_for_status()

        await asyncio.gather(*(post(body) for body in bodies))
    return latencies


def report(label: str, latencies: list[float], elapsed: float) -> None:
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    print(
        f"  {label:<18} {len(latencies) / elapsed:8.0f} msg/s   p50 {cuts[49] * 1000:6.1f} ms   "
        f"p99 {cuts[98] * 1000:7.1f} ms   max {max(latencies) * 1000:7.1f} ms"
    )


def run(name: str, store: Store, messages: int, concurrency: int) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "METRIPORT_WEBHOOK_KEY": KEY, "DATABASE_URL": store.url}
    receiver = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "metriport-flows"),
            "receiver",
            "--no-dispatcher",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base_url}/healthz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or receiver.poll() is not None:
            raise RuntimeError("the receiver did not start")
        time.sleep(0.1)
    print(f"{name}:")
    bodies = [message(f"pat-{i % 50}") for i in range(messages)]
    started = time.perf_counter()
    latencies = asyncio.run(post_all(base_url, bodies, concurrency))
    report("distinct", latencies, time.perf_counter() - started)
    storm = [bodies[0]] * concurrency
    started = time.perf_counter()
    latencies = asyncio.run(post_all(base_url, storm, concurrency))
    report("duplicate storm", latencies, time.perf_counter() - started)
    stored = sum(count for _, count, _ in store.backlog())
    print(f"  rows stored: {stored} (expected {messages})")
    receiver.terminate()
    receiver.wait(timeout=30)


def main(messages: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        sqlite = Store(f"sqlite:///{Path(folder) / 'inbox.db'}")
        sqlite.migrate()
        run("SQLite (WAL)", sqlite, messages, concurrency)
        sqlite.dispose()
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        print("PostgreSQL: skipped (set TEST_DATABASE_URL)")
        return
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
        run("PostgreSQL", postgres, messages, concurrency)
        postgres.dispose()
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000, int(sys.argv[2]) if len(sys.argv) > 2 else 20)
