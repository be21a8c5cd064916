"""Metriport's rate limits as an exact shared schedule of start calls: the arithmetic, free of Prefect.

Metriport counts start calls per operation in a fixed window (document query 20/min, consolidated
120/min, patient create 15/min; docs/metriport.md §1) and answers 429 beyond that. Every process that
makes a start call first reserves a time for it in the store (`metriport_flows/store/call_slots.py`);
`next_call_at` gives the earliest time at which the call keeps every interval of one window plus a
latency margin at no more than the window's count. Because the interval is longer than Metriport's
window, no fixed window of Metriport's can ever see more, even when a call reaches Metriport up to the
margin later than its reserved time; and the schedule runs at `count / (window + margin)`: 98 % of the
limit with the default 1 s margin.

Configure with env vars `METRIPORT_RATE_DOCUMENT_QUERY`, `METRIPORT_RATE_CONSOLIDATED_QUERY`,
`METRIPORT_RATE_PATIENT_CREATE` (calls per window), `METRIPORT_RATE_WINDOW_SECONDS` and
`METRIPORT_RATE_MARGIN_SECONDS`, or pass a `RateLimitSettings` object.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Operation(StrEnum):
    """The Metriport operations that have a rate limiter (docs/metriport.md §1)."""

    document_query = "document-query"
    consolidated_query = "consolidated-query"
    patient_create = "patient-create"


class RateLimitSettings(BaseSettings):
    """Calls Metriport allows per window, per operation; Metriport can raise them per customer."""

    model_config = SettingsConfigDict(env_prefix="METRIPORT_RATE_", env_file=".env", extra="ignore")

    document_query: int = Field(20, ge=1, description="POST /document/query per window")
    consolidated_query: int = Field(120, ge=1, description="POST /patient/{id}/consolidated/query per window")
    patient_create: int = Field(15, ge=1, description="POST /patient and PUT /patient/{id} per window")
    window_seconds: float = Field(60.0, gt=0, description="Metriport's fixed window (60 s)")
    margin_seconds: float = Field(
        1.0, ge=0, description="How much later than its reserved time a call may reach Metriport"
    )

    def per_window(self, operation: Operation) -> int:
        return int(getattr(self, Operation(operation).name))


class Reservation(NamedTuple):
    """A start call's reserved time and the time it was reserved at (epoch seconds, one clock)."""

    at: float
    now: float

    @property
    def wait(self) -> float:
        return max(0.0, self.at - self.now)


@dataclass(frozen=True)
class RateLimit:
    """At most `per_window` start calls of `operation` in any interval of `span` seconds."""

    operation: Operation
    per_window: int
    window_seconds: float
    margin_seconds: float

    @classmethod
    def for_operation(cls, operation: Operation, settings: RateLimitSettings) -> "RateLimit":
        return cls(
            Operation(operation), settings.per_window(operation), settings.window_seconds, settings.margin_seconds
        )

    @property
    def span(self) -> float:
        return self.window_seconds + self.margin_seconds

    @property
    def share_of_metriports_limit(self) -> float:
        """The schedule's steady rate over Metriport's: window / (window + margin)."""
        return self.window_seconds / self.span

    def next_call_at(self, recent: Sequence[float], now: float) -> float:
        """The earliest time at or after `now` for one more call, given the reserved times `recent`
        (ascending): never before the `per_window`-th latest reservation plus one span."""
        if len(recent) < self.per_window:
            return now
        return max(now, recent[-self.per_window] + self.span)

    def reserve(self, recent: Sequence[float], now: float) -> tuple[float, list[float]]:
        """The time for one more call, and the reserved times to keep: those that can still hold a call
        back (less than one span old, at most one window's count)."""
        at = self.next_call_at(recent, now)
        kept = [t for t in recent if t > now - self.span]
        return at, [*kept, at][-self.per_window :]


def rate_limits(settings: RateLimitSettings | None = None) -> list[RateLimit]:
    settings = settings or RateLimitSettings()
    return [RateLimit.for_operation(operation, settings) for operation in Operation]
