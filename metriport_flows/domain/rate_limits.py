"""Metriport's rate limits as Prefect global concurrency limits: the arithmetic, free of Prefect.

Metriport counts start calls per operation in a fixed window (document query 20/min, consolidated
120/min, patient create 15/min; docs/metriport.md §1) and answers 429 beyond that. A global concurrency
limit with slot decay is a leaky bucket shared by all flow runs: `limit` slots of burst, refilled at
`slot_decay_per_second`. In any window of W seconds it admits at most `limit + decay * W` calls, so the
allowance is split into a burst and a refill that together never exceed Metriport's count for a window.

Configure with env vars `METRIPORT_RATE_DOCUMENT_QUERY`, `METRIPORT_RATE_CONSOLIDATED_QUERY`,
`METRIPORT_RATE_PATIENT_CREATE` (calls per window), `METRIPORT_RATE_WINDOW_SECONDS` and
`METRIPORT_RATE_BURST_FRACTION`, or pass a `RateLimitSettings` object.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Operation(StrEnum):
    """The Metriport operations that have a rate limiter (docs/metriport.md §1)."""

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
        return int(getattr(self, Operation(operation).name))


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
