"""How long a run waits for Metriport: a hot window in-process, a soft deadline after which the
reconciler asks Metriport, a hard deadline after which the wait ends as `timeout` (docs/design.md)."""

from __future__ import annotations

import statistics
from typing import Protocol

from pydantic import BaseModel, Field

from metriport_flows.settings import Settings


class Tuning(Protocol):
    """A run's own wait values (None: the settings' default)."""

    @property
    def hot_window_seconds(self) -> float | None: ...
    @property
    def soft_deadline_seconds(self) -> float | None: ...
    @property
    def hard_deadline_seconds(self) -> float | None: ...


# Fewer replies than this say nothing about the stage's reply time: give way after the floor alone.
MIN_REPLIES = 10


class Deadlines(BaseModel):
    soft_seconds: float
    hard_seconds: float
    hot_window_seconds: float
    give_way_seconds: float | None = None  # None: hold the whole hot window even when runs queue for slots

    def give_way_after(self, reply_seconds: list[float]) -> float | None:
        """How long a wait holds its process slot while other runs queue for one: the p90 of the stage's
        recent replies that came within the hot window (the ones holding can catch; a reply later than
        most of them is not coming soon), never under the floor `give_way_seconds`, never over the hot
        window. None: never give way."""
        if self.give_way_seconds is None:
            return None
        floor = self.give_way_seconds
        catchable = [seconds for seconds in reply_seconds if seconds <= self.hot_window_seconds]
        if len(catchable) >= MIN_REPLIES:
            floor = max(floor, statistics.quantiles(catchable, n=10, method="inclusive")[-1])
        return min(floor, self.hot_window_seconds)

    @classmethod
    def of(cls, tuning: Tuning, settings: Settings) -> Deadlines:
        """A run's own values where it gave them, else the settings'; the hard deadline never comes
        before the soft one."""
        soft = tuning.soft_deadline_seconds or settings.soft_deadline_seconds
        hot = tuning.hot_window_seconds
        return cls(
            soft_seconds=soft,
            hard_seconds=max(tuning.hard_deadline_seconds or settings.hard_deadline_seconds, soft),
            hot_window_seconds=settings.hot_window_seconds if hot is None else hot,
            give_way_seconds=settings.hot_window_give_way_seconds if settings.hot_window_give_way else None,
        )


class WaitTuning(BaseModel):
    """How a bulk flow's wait behaves; each default comes from settings (HOT_WINDOW_SECONDS, ...)."""

    hot_window_seconds: float | None = Field(None, ge=0, description="Watch in-process this long, then suspend")
    soft_deadline_seconds: float | None = Field(None, gt=0, description="After this the reconciler asks Metriport")
    hard_deadline_seconds: float | None = Field(None, gt=0, description="After this the wait ends as timeout")

    def deadlines(self, settings: Settings) -> Deadlines:
        return Deadlines.of(self, settings)
