"""The dispatcher: inbox rows → the wait they end → the stage's urgent work → resolve → deliver.

Runs as a background task of the receiver (or alone: `metriport-flows dispatcher`). Several can run
against one PostgreSQL inbox: claims are exclusive. A message is never dropped: with no wait yet it
stays `unmatched` (re-checked with backoff, woken at once when its wait registers), a failing handler
puts it in `error` with backoff, and a message for a wait already resolved is recorded as late.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from datetime import datetime, timedelta

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception_type,
    wait_exponential,
)

from metriport_flows.client.messages import (
    GenericMessage,
    WebhookMessage,
    parse_message,
)
from metriport_flows.domain.stages import ResolvedBy, StageResult
from metriport_flows.settings import Settings
from metriport_flows.store import InboxMessage, MessageStatus, Store, Wait, WaitStatus
from metriport_flows.store.inbox import CLAIM_LEASE
from metriport_flows.webhook.correlation import correlate
from metriport_flows.webhook.delivery import deliver_due, deliver_wait
from metriport_flows.webhook.events import WAIT_RESOLVED, message_event, wait_event
from metriport_flows.webhook.handlers import metriport_router
from metriport_flows.webhook.protocols import Gateway, Metriport
from metriport_flows.webhook.router import HandlerContext, Router

logger = logging.getLogger(__name__)

HEARTBEAT = "dispatcher"
HEARTBEAT_EVERY = 5.0
ORPHAN_EVERY = 60.0


def retry_delay(attempts: int, *, cap: float) -> timedelta:
    return timedelta(seconds=min(0.5 * 2 ** min(attempts, 12), cap))


class Dispatcher:
    """Dispatches continuously: as soon as one of its `concurrency` slots frees it claims again, so a
    slow message (a bulk download may take minutes) never delays the others. It owns its claims and
    extends their lease while it works on them; a row is reclaimed by someone else only once this
    dispatcher stopped extending it (it died)."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        gateway: Gateway,
        api: Metriport,
        router: Router,
        *,
        batch_size: int = 50,
        concurrency: int = 8,
        lease: timedelta = CLAIM_LEASE,
        new_messages: asyncio.Event | None = None,
    ) -> None:
        self.store, self.settings, self.gateway, self.api, self.router = store, settings, gateway, api, router
        # set by a receiver in this process when it stored a new message: claimed at once, not on the next poll
        self.new_messages = new_messages or asyncio.Event()
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.lease = lease
        self.owner = f"dispatcher-{uuid.uuid4().hex[:16]}"
        self._held: set[str] = set()  # claimed and not yet finished: their leases are extended
        self._tasks: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()

    async def _claim(self, limit: int, now: datetime | None = None) -> list[InboxMessage]:
        if limit <= 0:
            return []
        rows = await asyncio.to_thread(self.store.claim_pending, limit, owner=self.owner, lease=self.lease, now=now)
        self._held.update(row.message_id for row in rows)
        return rows

    async def dispatch_once(self, now: datetime | None = None) -> int:
        """Claim one batch of due rows and dispatch all of it (the reconciler's pass); how many."""
        rows = await self._claim(self.batch_size, now)
        slots = asyncio.Semaphore(self.concurrency)

        async def bounded(row: InboxMessage) -> None:
            async with slots:
                await self.dispatch(row)

        async with self._keeping_leases():
            await asyncio.gather(*(bounded(row) for row in rows))
        return len(rows)

    async def fill_slots(self) -> int:
        """Claim as many due rows as there are free slots and start each at once; how many."""
        rows = await self._claim(min(self.concurrency - len(self._tasks), self.batch_size))
        for row in rows:
            task = asyncio.create_task(self.dispatch(row), name=f"dispatch {row.message_id}")
            self._tasks.add(task)
            task.add_done_callback(self._free)
        return len(rows)

    def _free(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slot_freed.set()

    @asynccontextmanager
    async def _keeping_leases(self) -> AsyncIterator[None]:
        """While the block runs, extend the lease of every row in flight every third of the lease."""
        keeper = asyncio.create_task(self._keep_leases())
        try:
            yield
        finally:
            keeper.cancel()
            with suppress(asyncio.CancelledError):
                await keeper

    async def _keep_leases(self) -> None:
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            try:
                await asyncio.to_thread(self.store.extend_claims, list(self._held), owner=self.owner, lease=self.lease)
            except Exception as exc:  # the database is down: the next beat tries again
                logger.warning("dispatcher could not extend its leases: %s", exc.__class__.__name__)

    async def dispatch(self, row: InboxMessage) -> None:
        try:
            await self._dispatch(row)
        except Exception as exc:  # a failing handler never loses the message: error + backoff
            logger.warning("message %s (%s) failed: %s", row.message_id, row.type, exc.__class__.__name__)
            await asyncio.to_thread(
                self.store.retry_message,
                row.message_id,
                owner=self.owner,
                status=MessageStatus.error,
                delay=retry_delay(row.attempts, cap=600),
                error=f"{exc.__class__.__name__}: {exc}",
            )
        finally:
            self._held.discard(row.message_id)

    async def _finish(
        self,
        row: InboxMessage,
        wait: Wait | None,
        detail: str,
        *,
        status: str | None = None,
        outcome: str | None = None,
    ) -> None:
        finished = await asyncio.to_thread(
            self.store.finish_message,
            row.message_id,
            owner=self.owner,
            wait_id=wait.id if wait else None,
            detail=detail,
        )
        if not finished:
            logger.warning("message %s: claim lost before it was finished (%s)", row.message_id, detail)
            return
        self.gateway.emit(message_event(row, wait, status=status, outcome=outcome))

    async def _dispatch(self, row: InboxMessage) -> None:
        if row.body is None:
            await asyncio.to_thread(self.store.finish_message, row.message_id, owner=self.owner, detail="body purged")
            return
        message = parse_message(row.body)
        status = getattr(message, "status", None)
        registration = self.router.get(message.type)
        waits: list[Wait] = []
        if registration is not None and isinstance(message, GenericMessage):
            await self._finish(row, None, f"unparseable {message.type}: {message.parse_error}")
            return
        if registration is not None and registration.stage is not None:
            found, path = await asyncio.to_thread(correlate, self.store, message, registration.stage)
            if not found:
                await asyncio.to_thread(
                    self.store.retry_message,
                    row.message_id,
                    owner=self.owner,
                    status=MessageStatus.unmatched,
                    delay=retry_delay(row.attempts, cap=300),
                )
                return
            waits = [wait for wait in found if wait.status == WaitStatus.open]
            if not waits:
                await self._finish(row, found[0], f"late: wait already {found[0].status} (via {path})", status=status)
                return
        if registration is None:
            await self._finish(row, None, "recorded (no handler)", status=status)
            return
        wait = waits[0] if waits else None
        context = HandlerContext(
            store=self.store, settings=self.settings, api=self.api, gateway=self.gateway, row=row, wait=wait
        )
        result = await registration.handler(message, context)
        if result is None or wait is None:
            await self._finish(row, wait, "recorded", status=status)
            return
        await self._resolve(row, message, waits, result, status)

    async def _resolve(
        self, row: InboxMessage, message: WebhookMessage, waits: list[Wait], result: StageResult, status: str | None
    ) -> None:
        """The handler's result ends every wait given (the runs sharing one Metriport query), each once."""
        resolved: list[Wait] = []
        for wait in waits:
            own = result.model_copy(
                update={
                    "message_id": message.message_id,
                    "resolved_by": ResolvedBy.webhook,
                    "request_id": result.request_id or message.request_id or wait.request_id,
                }
            )
            if await asyncio.to_thread(self.store.resolve_wait, wait.id, own):
                done = await asyncio.to_thread(self.store.get_wait, wait.id)
                if done is None:
                    raise RuntimeError(f"wait {wait.id} vanished after it was resolved")
                resolved.append(done)
        if not resolved:
            await self._finish(row, waits[0], "late: wait resolved meanwhile", status=status)
            return
        outcome = result.outcome.value
        shared = f" ({len(resolved)} waits share its request id)" if len(resolved) > 1 else ""
        await self._finish(row, resolved[0], f"resolved {outcome}{shared}", status=status, outcome=outcome)
        for done in resolved:
            logger.info("wait %s resolved %s by message %s", done.id, outcome, message.message_id)
            self.gateway.emit(wait_event(WAIT_RESOLVED, done, message_id=message.message_id))
            await deliver_wait(self.store, self.gateway, done.id)

    async def deliver(self) -> dict[str, int]:
        return await deliver_due(self.store, self.gateway)

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set: keep every slot busy with due rows, deliver resolved waits, orphan stale
        unmatched rows, heartbeat. On stop, the rows in flight are released for the next dispatcher."""
        poll = self.settings.dispatcher_poll_seconds
        last_heartbeat = last_orphaning = last_delivery = 0.0
        delivery: asyncio.Task[dict[str, int]] | None = None
        delivered: dict[str, int] = {}
        async with self._keeping_leases():
            try:
                while not stop.is_set():
                    self._slot_freed.clear()
                    self.new_messages.clear()
                    try:
                        await self.fill_slots()
                        now = time.monotonic()
                        if delivery is not None and delivery.done():
                            delivered = delivery.result() if not delivery.exception() else {}
                            delivery = None
                        if delivery is None and now - last_delivery >= poll:
                            last_delivery = now
                            delivery = asyncio.create_task(self.deliver())
                        if now - last_orphaning > ORPHAN_EVERY:
                            last_orphaning = now
                            await asyncio.to_thread(
                                self.store.orphan_unmatched, timedelta(seconds=self.settings.hard_deadline_seconds)
                            )
                        if now - last_heartbeat > HEARTBEAT_EVERY:
                            last_heartbeat = now
                            await asyncio.to_thread(
                                self.store.record_heartbeat,
                                HEARTBEAT,
                                {"in_flight": len(self._tasks), "delivery": delivered},
                            )
                    except Exception as exc:  # the database or Prefect is down: keep polling, nothing is lost
                        logger.warning("dispatcher pass failed: %s", exc.__class__.__name__)
                    await self._until_slot_freed_or(stop, poll)
            finally:
                await self._release_in_flight(delivery)

    async def _until_slot_freed_or(self, stop: asyncio.Event, timeout: float) -> None:
        waiters = [
            asyncio.create_task(stop.wait()),
            asyncio.create_task(self._slot_freed.wait()),
            asyncio.create_task(self.new_messages.wait()),
        ]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _release_in_flight(self, delivery: asyncio.Task[dict[str, int]] | None) -> None:
        held = list(self._held)
        tasks = [*self._tasks, *([delivery] if delivery is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if held:
            await asyncio.to_thread(self.store.release_claims, held, owner=self.owner)


async def run_dispatcher(
    settings: Settings, store: Store, stop: asyncio.Event, new_messages: asyncio.Event | None = None
) -> None:
    """The dispatcher with its own Prefect gateway and Metriport client, until `stop` is set; if it
    cannot start (Prefect unreachable, say) it is started again with backoff rather than left dead.
    `new_messages`: set by this process's receiver when it stores a message, so it is claimed at once."""
    retrying = AsyncRetrying(
        wait=wait_exponential(multiplier=0.5, max=30),
        retry=retry_if_exception_type(Exception),
        stop=lambda _state: stop.is_set(),
        before_sleep=_log_restart,
    )
    try:
        async for attempt in retrying:
            with attempt:
                await _run_dispatcher(settings, store, stop, new_messages)
    except RetryError:
        logger.info("dispatcher stopped while restarting")


def _log_restart(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    logger.warning("dispatcher stopped (%s); restarting", error.__class__.__name__ if error else "?")


async def _run_dispatcher(
    settings: Settings, store: Store, stop: asyncio.Event, new_messages: asyncio.Event | None
) -> None:
    from metriport_flows.client.api import MedicalApi
    from metriport_flows.webhook.prefect_gateway import PrefectGateway

    async with AsyncExitStack() as stack:
        gateway = await stack.enter_async_context(PrefectGateway(settings.prefect_max_concurrent_calls))
        api = await stack.enter_async_context(MedicalApi.from_settings(settings))
        await Dispatcher(store, settings, gateway, api, metriport_router(), new_messages=new_messages).run(stop)
