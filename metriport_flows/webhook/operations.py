"""Operations: what is waiting, what is stuck, and the knobs an operator needs (replay, purge).

`collect_status` gathers one `StatusReport` (open waits, inbox backlog, the failed deliveries Metriport
reports, the last reconcile pass) that the CLI prints as rich tables or JSON. Everything in it is ids,
counts and times, never PHI. Durations for `purge --older-than` are `<number><unit>` groups (s, m, h, d,
w), e.g. `30d`, `12h`, `90m`, `1d12h`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import BaseModel, Field

from metriport_flows.client.errors import MetriportError
from metriport_flows.store import Store
from metriport_flows.webhook.reconciler import HEARTBEAT

if TYPE_CHECKING:
    from metriport_flows.client.api import MedicalApi

UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_GROUP = re.compile(r"(\d+)([smhdw])")
_DURATION = re.compile(r"(?:\d+[smhdw])+")


class BadDuration(ValueError):
    """The text is not a duration like 30d, 12h, 90m or 1d12h."""


def parse_duration(text: str) -> timedelta:
    """`30d` → 30 days; groups add up (`1d12h`); units s, m, h, d, w; no sign, no spaces, no bare numbers."""
    compact = text.strip().lower()
    if not _DURATION.fullmatch(compact):
        raise BadDuration(
            f"{text!r} is not a duration: use a number and a unit (s, m, h, d, w), e.g. 30d, 12h, 90m or 1d12h"
        )
    return timedelta(**_sum_units(compact))


def _sum_units(compact: str) -> dict[str, int]:
    totals: dict[str, int] = {}
    for number, unit in _GROUP.findall(compact):
        totals[UNITS[unit]] = totals.get(UNITS[unit], 0) + int(number)
    return totals


class WaitView(BaseModel):
    wait_id: str
    flow_run_id: str
    stage: str
    attempt: int
    request_id: str | None
    age_seconds: float
    soft_deadline: datetime
    hard_deadline: datetime
    past_soft_deadline: bool


class BacklogRow(BaseModel):
    status: str
    count: int
    oldest_age_seconds: float | None


class WebhookView(BaseModel):
    """`GET /settings/webhook`, or why it could not be read."""

    enabled: bool | None = None
    processing: int | None = None
    failed: int | None = None
    error: str | None = Field(None, description="Set when Metriport could not be asked")


class ReconcileView(BaseModel):
    at: datetime
    age_seconds: float
    report: dict[str, Any]


class StatusReport(BaseModel):
    generated_at: datetime
    open_waits: list[WaitView]
    backlog: list[BacklogRow]
    webhooks: WebhookView
    last_reconcile: ReconcileView | None


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else round((now - then).total_seconds(), 1)


def open_waits(store: Store, now: datetime) -> list[WaitView]:
    return [
        WaitView(
            wait_id=w.id,
            flow_run_id=w.flow_run_id,
            stage=w.stage,
            attempt=w.attempt,
            request_id=w.request_id,
            age_seconds=_age(now, w.created_at) or 0.0,
            soft_deadline=w.soft_deadline,
            hard_deadline=w.hard_deadline,
            past_soft_deadline=w.soft_deadline <= now,
        )
        for w in store.open_waits()
    ]


def backlog(store: Store, now: datetime) -> list[BacklogRow]:
    return [
        BacklogRow(status=status, count=count, oldest_age_seconds=_age(now, oldest))
        for status, count, oldest in store.backlog()
    ]


async def webhook_view(api: MedicalApi | None) -> WebhookView:
    if api is None:
        return WebhookView(error="not asked")
    try:
        status = await api.get_webhook_status()
    except (MetriportError, httpx.HTTPError) as exc:
        return WebhookView(error=f"could not ask Metriport: {type(exc).__name__}")
    return WebhookView(
        enabled=status.webhook_enabled,
        processing=status.webhook_requests_processing,
        failed=status.webhook_requests_failed,
    )


def last_reconcile(store: Store, now: datetime) -> ReconcileView | None:
    heartbeat = store.get_heartbeat(HEARTBEAT)
    if heartbeat is None:
        return None
    return ReconcileView(at=heartbeat.at, age_seconds=_age(now, heartbeat.at) or 0.0, report=heartbeat.detail)


async def collect_status(store: Store, api: MedicalApi | None, now: datetime | None = None) -> StatusReport:
    now = now or datetime.now(UTC)
    return StatusReport(
        generated_at=now,
        open_waits=open_waits(store, now),
        backlog=backlog(store, now),
        webhooks=await webhook_view(api),
        last_reconcile=last_reconcile(store, now),
    )


def replay(store: Store, message_id: str) -> bool:
    """Put a stored message back in the queue (any state but one a live dispatcher holds); False when no
    such message is stored or a dispatcher is working on it."""
    return store.requeue_message(message_id)


def purge(store: Store, older_than: timedelta) -> int:
    """Drop the bodies (PHI) of finished messages received longer ago than `older_than`."""
    return store.purge_bodies(older_than)
