"""Metriport's rate limits, kept across every run, process and machine by one schedule in the store.

`ensure_rate_limits` writes each operation's limit into the store (from `METRIPORT_RATE_*`);
`call_within_limit` reserves a time for each attempt of a start call, sleeps until it and makes the
call. Every attempt takes its own time because Metriport counts every call, a refused one too; so the
start calls are made without the client's own retries, and retried here. The arithmetic is in
`metriport_flows.domain.rate_limits`, the reservation in `metriport_flows.store.call_slots`.

Requires: DATABASE_URL (the store).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import TypeVar

from prefect import get_run_logger
from prefect.exceptions import MissingContextError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from metriport_flows.client.errors import is_transient
from metriport_flows.domain.rate_limits import Operation, RateLimit, RateLimitSettings, rate_limits
from metriport_flows.store.store import Store, get_store

T = TypeVar("T")
# A wait this long is worth a line in the run's log: it explains where the run's time went.
NOTEWORTHY_WAIT_SECONDS = 5.0


def ensure_rate_limits(settings: RateLimitSettings | None = None, store: Store | None = None) -> list[RateLimit]:
    """Create or update the limits in the store; idempotent, safe to call at every start."""
    limits, store = rate_limits(settings), store or get_store()
    for limit in limits:
        store.set_rate_limit(limit)
    return limits


@lru_cache
def default_limit(operation: Operation) -> RateLimit:
    """The limit from this process's METRIPORT_RATE_* (read once), for an operation none was written for."""
    return RateLimit.for_operation(operation, RateLimitSettings())


async def wait_for_slot(operation: Operation, store: Store | None = None) -> float:
    """Sleep until this process may make one more `operation` start call; the seconds slept."""
    reservation = await asyncio.to_thread((store or get_store()).reserve_call, operation, default_limit(operation))
    delay = reservation.wait
    if delay >= NOTEWORTHY_WAIT_SECONDS:
        try:
            get_run_logger().info("waiting %.0f s for Metriport's %s rate limit", delay, Operation(operation).value)
        except MissingContextError:
            pass
    await asyncio.sleep(delay)
    return delay


async def call_within_limit(operation: Operation, call: Callable[[], Awaitable[T]], store: Store | None = None) -> T:
    """Make a start call within Metriport's limit, retrying transient failures, each attempt in its own slot."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception(is_transient),
        wait=wait_exponential_jitter(initial=0.5, max=20),
        stop=stop_after_attempt(5),
        reraise=True,
    ):
        with attempt:
            await wait_for_slot(operation, store)
            return await call()
    raise AssertionError("unreachable: tenacity reraises")
