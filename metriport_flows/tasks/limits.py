"""Metriport's rate limits, enforced across every run and process with Prefect global concurrency limits.

Metriport counts start calls per operation in a fixed window (document query 20/min, consolidated
120/min, patient create 15/min; fact sheet §1) and answers 429 beyond that. A Prefect global
concurrency limit with slot decay is a leaky bucket shared by all flow runs: `limit` slots of burst,
refilled at `slot_decay_per_second`. In any window of W seconds it admits at most
`limit + decay * W` calls, so we split the allowance into a burst and a refill that together never
exceed Metriport's count for one window. Prefect floors the decay and restarts its clock whenever the
limit is touched (also by a refused attempt), so under contention it admits noticeably less than the
nominal rate (about half, measured with tens of waiters): never more, which is what matters here.

Requires: a Prefect API (PREFECT_API_URL) for `ensure_rate_limits` and the `wait_for_slot` helpers.
Configure with env vars `METRIPORT_RATE_DOCUMENT_QUERY`, `METRIPORT_RATE_CONSOLIDATED_QUERY`,
`METRIPORT_RATE_PATIENT_CREATE` (calls per window), `METRIPORT_RATE_WINDOW_SECONDS` and
`METRIPORT_RATE_BURST_FRACTION`, or pass a `RateLimitSettings` object.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import httpx
from prefect.client.orchestration import PrefectClient, get_client
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
from prefect.concurrency.asyncio import rate_limit as _prefect_rate_limit
from prefect.concurrency.sync import rate_limit as _prefect_rate_limit_sync
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from tenacity import retry, retry_if_exception, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter


class Operation(StrEnum):
    """The Metriport operations that have a rate limiter (fact sheet §1)."""

    document_query = "document-query"
    consolidated_query = "consolidated-query"
    patient_create = "patient-create"


def limit_name(operation: Operation) -> str:
    """The Prefect global concurrency limit name for an operation, e.g. `metriport-document-query`."""
    return f"metriport-{Operation(operation).value}"


class RateLimitSettings(BaseSettings):
    """Calls Metriport allows per window, per operation; Metriport can raise them per customer."""

    model_config = SettingsConfigDict(env_prefix="METRIPORT_RATE_", env_file=".env", extra="ignore")

    document_query: int = Field(20, ge=2, description="POST /document/query per window")
    consolidated_query: int = Field(120, ge=2, description="POST /patient/{id}/consolidated/query per window")
    patient_create: int = Field(15, ge=2, description="POST /patient and PUT /patient/{id} per window")
    window_seconds: float = Field(60.0, gt=0, description="Metriport's fixed window (60 s)")
    burst_fraction: float = Field(0.25, gt=0, lt=1, description="Share of the window's calls allowed at once")

    def per_window(self, operation: Operation) -> int:
        return getattr(self, Operation(operation).name)


@dataclass(frozen=True)
class RateLimit:
    """One global concurrency limit: `slots` of burst, refilled at `slot_decay_per_second`."""

    name: str
    slots: int
    slot_decay_per_second: float

    @classmethod
    def for_operation(cls, operation: Operation, settings: RateLimitSettings) -> "RateLimit":
        per_window = settings.per_window(operation)
        slots = min(per_window - 1, max(1, round(per_window * settings.burst_fraction)))
        return cls(
            name=limit_name(operation),
            slots=slots,
            slot_decay_per_second=(per_window - slots) / settings.window_seconds,
        )

    def max_calls_in(self, seconds: float) -> float:
        """The most calls this limit admits in any interval of `seconds`."""
        return self.slots + self.slot_decay_per_second * seconds


def rate_limits(settings: RateLimitSettings | None = None) -> list[RateLimit]:
    settings = settings or RateLimitSettings()
    return [RateLimit.for_operation(operation, settings) for operation in Operation]


def _is_transient(exc: BaseException) -> bool:
    """The embedded SQLite server refuses bursts with 503 (prefect-notes.md); those are worth retrying."""
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in (502, 503, 504)
    return isinstance(exc, httpx.TransportError)


_retry_transient = retry(
    retry=retry_if_exception(_is_transient),
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


@retry(
    retry=retry_if_exception_type(ConcurrencySlotAcquisitionError),
    wait=wait_exponential_jitter(initial=0.5, max=10),
    stop=stop_after_attempt(8),
    reraise=True,
)
def wait_for_slot_sync(operation: Operation, timeout_seconds: float | None = None) -> None:
    """`wait_for_slot` for synchronous tasks."""
    _prefect_rate_limit_sync(limit_name(operation), occupy=1, timeout_seconds=timeout_seconds)
