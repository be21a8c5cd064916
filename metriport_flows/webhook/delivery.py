"""Deliver resolved waits to their runs: resume a run suspended on the wait's pause key, stop when the
run read the result itself, and otherwise look again later. A wait is never dropped.

A wait whose run has ended another way (failed, cancelled, completed without it) is closed as
`abandoned`. Prefect refuses a resume that comes before the suspend ("not paused": ABORT), so a run that is still
running, or between its last look at the wait and its suspend, is simply re-checked with backoff.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from enum import StrEnum

from metriport_flows.store import Store, Wait, WaitStatus
from metriport_flows.webhook.events import WAIT_DELIVERED, wait_event
from metriport_flows.webhook.protocols import Gateway, RunView

logger = logging.getLogger(__name__)

FIRST_RECHECK = 0.25
MAX_RECHECK = 30.0
FINISHED_RUN_RECHECK = 300.0
# How long one deliverer holds a wait; a deliverer that dies mid-resume lets it go after this.
DELIVERY_LEASE = timedelta(seconds=60)


class Delivery(StrEnum):
    delivered = "delivered"  # resumed with the result
    consumed = "consumed"  # the run read it itself
    later = "later"  # re-check scheduled
    abandoned = "abandoned"  # the run ended another way: the wait is closed, nothing looks again
    gone = "gone"  # not resolved (or unknown): nothing to deliver


def recheck_delay(attempts: int, *, finished_run: bool = False) -> timedelta:
    if finished_run:
        return timedelta(seconds=FINISHED_RUN_RECHECK)
    return timedelta(seconds=min(FIRST_RECHECK * 2 ** min(attempts, 10), MAX_RECHECK))


async def deliver_wait(store: Store, gateway: Gateway, wait_id: str) -> Delivery:
    """Resume the run with the wait's result, at most once: only the caller that claimed the delivery
    in the store reads the run and resumes it (the dispatcher and the reconciler both deliver; with a
    hot window of 0 a second resume could otherwise end the next stage's suspend)."""
    wait = await asyncio.to_thread(store.get_wait, wait_id)
    if wait is None or wait.status == WaitStatus.open:
        return Delivery.gone
    if wait.status in (WaitStatus.delivered, WaitStatus.consumed):
        return Delivery.consumed if wait.status == WaitStatus.consumed else Delivery.delivered
    if not await asyncio.to_thread(store.claim_delivery, wait.id, DELIVERY_LEASE):
        return Delivery.later  # someone else is delivering it right now
    try:
        run = await gateway.read_flow_run(wait.flow_run_id)
        if run is not None and run.has_ended:
            return await _abandon(store, wait, run)
        if run is not None and run.is_paused and run.pause_key == wait.pause_key:
            result = wait.result_model()
            assert result is not None, "a resolved wait has a result"
            answer = await gateway.resume(wait.flow_run_id, result)
            if answer.accepted:
                await asyncio.to_thread(store.mark_wait_delivered, wait.id)
                gateway.emit(wait_event(WAIT_DELIVERED, wait, via="resume"))
                logger.info("wait %s delivered: resumed run %s (%s)", wait.id, wait.flow_run_id, wait.pause_key)
                return Delivery.delivered
            return await _later(store, wait, f"resume {answer.status}: {answer.reason or ''}", run)
    except Exception as exc:  # Prefect unreachable after retries: keep the wait, look again later
        return await _later(store, wait, f"prefect: {exc.__class__.__name__}", None)
    return await _later(store, wait, _why_not(run, wait), run)


async def _abandon(store: Store, wait: Wait, run: RunView) -> Delivery:
    if await asyncio.to_thread(store.abandon_wait, wait.id):
        logger.info("wait %s abandoned: run %s is %s", wait.id, wait.flow_run_id, run.state_type)
        return Delivery.abandoned
    return await _later(store, wait, f"run is {run.state_type}", run)


def _why_not(run: RunView | None, wait: Wait) -> str:
    if run is None:
        return "flow run not found"
    if run.is_paused:
        return f"paused on {run.pause_key!r}, not {wait.pause_key!r}"
    return f"run is {run.state_type} ({run.state_name})"


async def _later(store: Store, wait: Wait, why: str, run: RunView | None) -> Delivery:
    fresh = await asyncio.to_thread(store.get_wait, wait.id)
    if fresh is not None and fresh.status == WaitStatus.consumed:
        return Delivery.consumed
    if fresh is not None and fresh.status == WaitStatus.delivered:
        return Delivery.delivered
    delay = recheck_delay(wait.delivery_attempts, finished_run=run is not None and run.is_terminal)
    await asyncio.to_thread(store.retry_delivery, wait.id, error=why, delay=delay)
    logger.debug("wait %s not delivered yet (%s); next look in %.2fs", wait.id, why, delay.total_seconds())
    return Delivery.later


async def deliver_due(store: Store, gateway: Gateway, limit: int = 100) -> dict[str, int]:
    """One pass over the waits whose next look is due; the gateway bounds the concurrency."""
    waits = await asyncio.to_thread(store.undelivered_waits, limit=limit)
    outcomes = await asyncio.gather(*(deliver_wait(store, gateway, wait.id) for wait in waits))
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.value] = counts.get(outcome.value, 0) + 1
    return counts
