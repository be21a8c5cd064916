"""Exactly once across receivers and dispatchers: two receivers (each its own uvicorn and connection pool)
and two dispatchers on one inbox, under a duplicate storm sent to both, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager, contextmanager
from pathlib import Path

import httpx

from metriport_flows.client.api import MedicalApi
from metriport_flows.settings import Settings
from metriport_flows.store import MessageStatus, Store, WaitStatus
from metriport_flows.webhook.dispatcher import Dispatcher
from metriport_flows.webhook.events import WAIT_RESOLVED, message_event_id
from metriport_flows.webhook.handlers import metriport_router
from metriport_flows.webhook.protocols import RunView
from metriport_flows.webhook.receiver import WEBHOOK_PATH, create_app
from tests.fixtures.emulator import api_key_for
from tests.fixtures.inbox import RecordingGateway, conversion_message, make_settings, serve, signed
from tests.metriport_flows.webhook.test_dispatcher import wait_for

PATIENTS = 40
COPIES = 6  # each message three times to each receiver, all at once


@contextmanager
def receivers(settings: Settings, url: str, count: int) -> Iterator[list[str]]:
    """`count` receivers on their own ports, each with its own store (engine and pool) over one inbox."""
    with ExitStack() as stack:
        urls = []
        for _ in range(count):
            store = Store(url)
            stack.callback(store.dispose)
            urls.append(stack.enter_context(serve(create_app(settings, store, run_dispatcher=False))))
        yield urls


@asynccontextmanager
async def dispatchers(
    settings: Settings, url: str, gateways: list[RecordingGateway], emulator_app
) -> AsyncIterator[None]:
    """A dispatcher per gateway running on one inbox, each with its own store; stopped on exit."""
    stop = asyncio.Event()
    async with AsyncExitStack() as stack:
        transport = httpx.ASGITransport(app=emulator_app)
        api = await stack.enter_async_context(
            MedicalApi("http://emulator", api_key_for("two-receivers"), transport=transport)
        )
        running = []
        for gateway in gateways:
            store = Store(url)
            stack.callback(store.dispose)
            running.append(Dispatcher(store, settings, gateway, api, metriport_router()))
        tasks = [asyncio.create_task(d.run(stop)) for d in running]
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks)


async def test_a_duplicate_storm_to_two_receivers_is_stored_and_handled_once(
    store: Store, tmp_path: Path, emulator_app
) -> None:
    settings = make_settings(tmp_path, store)
    runs: dict[str, RunView] = {}  # one Prefect; each dispatcher's gateway records what that one did
    gateways = [RecordingGateway(runs=runs) for _ in range(2)]
    waits = {}
    for n in range(PATIENTS):
        wait = wait_for(store, f"pat-storm-{n}", request_id=f"req-storm-{n}")
        runs[wait.flow_run_id] = RunView("PAUSED", "Suspended", wait.pause_key)
        waits[wait.id] = wait
    messages = [signed(conversion_message(f"pat-storm-{n}", request_id=f"req-storm-{n}")) for n in range(PATIENTS)]
    deliveries = [(body, headers) for body, headers in messages for _ in range(COPIES)]

    with receivers(settings, store.url, 2) as urls:
        async with dispatchers(settings, store.url, gateways, emulator_app):
            limits = httpx.Limits(max_connections=32)
            async with httpx.AsyncClient(limits=limits, timeout=30) as client:
                gate = asyncio.Semaphore(32)

                async def send(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
                    async with gate:
                        return await client.post(url + WEBHOOK_PATH, content=body, headers=headers)

                targets = itertools.cycle(urls)
                responses = await asyncio.gather(*(send(next(targets), b, h) for b, h in deliveries))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and any(
                store.get_wait(wait_id).status != WaitStatus.delivered for wait_id in waits
            ):
                await asyncio.sleep(0.1)

    assert [r.status_code for r in responses] == [200] * len(deliveries)
    firsts = Counter(r.json()["received"] for r in responses if not r.json()["duplicate"])
    assert len(firsts) == PATIENTS and set(firsts.values()) == {1}, "each message stored by exactly one answer"
    rows = [store.get_message(message_id) for message_id in firsts]
    assert {row.status for row in rows} == {MessageStatus.done} and {row.attempts for row in rows} == {0}
    assert sum(count for _, count, _ in store.backlog()) == PATIENTS
    events = [event for g in gateways for event in g.events]
    assert all(any(event.event == WAIT_RESOLVED for event in g.events) for g in gateways), "both took a share"
    assert {store.get_wait(wait_id).status for wait_id in waits} == {WaitStatus.delivered}
    handled = Counter(event.id for event in events)
    assert all(handled[message_event_id(message_id)] == 1 for message_id in firsts), "each message handled once"
    resolved = Counter(event.resource["prefect.resource.id"] for event in events if event.event == WAIT_RESOLVED)
    assert len(resolved) == PATIENTS and set(resolved.values()) == {1}
    resumes = Counter(run_id for g in gateways for run_id, _ in g.resumes)
    assert sorted(resumes) == sorted(w.flow_run_id for w in waits.values()) and set(resumes.values()) == {1}
