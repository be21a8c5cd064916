"""Metriport's rate limits, enforced across every run and process with Prefect global concurrency limits.

`ensure_rate_limits` creates or updates one limit per operation (the arithmetic is in
`metriport_flows.domain.rate_limits`); `wait_for_slot` takes a slot right before a start call. Prefect
floors the decay and restarts its clock whenever the limit is touched (also by a refused attempt), so
under contention it admits noticeably less than the nominal rate: never more, which is what matters.

Requires: a Prefect API (PREFECT_API_URL).
"""

from __future__ import annotations

from prefect.client.orchestration import PrefectClient, get_client
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
from prefect.concurrency.asyncio import rate_limit as _prefect_rate_limit
from tenacity import (
    retry,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from metriport_flows.client.errors import is_transient
from metriport_flows.domain.rate_limits import (
    Operation,
    RateLimit,
    RateLimitSettings,
    limit_name,
    rate_limits,
)

_retry_transient = retry(
    retry=retry_if_exception(is_transient),
    wait=wait_exponential_jitter(initial=0.5, max=10),
    stop=stop_after_attempt(8),
    reraise=True,
)


@_retry_transient
async def _upsert(client: PrefectClient, limit: RateLimit) -> None:
    await client.upsert_global_concurrency_limit_by_name(
        limit.name, limit=limit.slots, slot_decay_per_second=limit.slot_decay_per_second
    )


async def ensure_rate_limits(
    settings: RateLimitSettings | None = None, client: PrefectClient | None = None
) -> list[RateLimit]:
    """Create or update the global concurrency limits; idempotent, safe to call at every start."""
    limits = rate_limits(settings)
    if client is not None:
        for limit in limits:
            await _upsert(client, limit)
        return limits
    async with get_client() as own_client:
        for limit in limits:
            await _upsert(own_client, limit)
    return limits


@retry(
    retry=retry_if_exception_type(ConcurrencySlotAcquisitionError),
    wait=wait_exponential_jitter(initial=0.5, max=10),
    stop=stop_after_attempt(8),
    reraise=True,
)
async def wait_for_slot(operation: Operation, timeout_seconds: float | None = None) -> None:
    """Block until Metriport's rate limit for `operation` lets one more start call through.

    Call it right before the Metriport start call. A missing limit (ensure_rate_limits not run) lets
    the call through with a warning in the run's log.
    """
    await _prefect_rate_limit(limit_name(operation), occupy=1, timeout_seconds=timeout_seconds)
