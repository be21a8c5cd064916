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


# Fewer replies than this say nothing about the stage's reply time: give way at the floor.
MIN_REPLIES = 10
# Past this share of busy CPU time a resume's cost is taken as 20 times its start (1 / (1 - 0.95)).
MAX_CPU_BUSY = 0.95


def resume_seconds_under_load(start_seconds: float, cpu_busy: float) -> float:
    """What a resume costs on a machine whose CPUs were busy a share `cpu_busy` of the time lately: the
    new process's work (`start_seconds`, a process start and a re-run to the wait) gets the idle share of
    the CPUs, so it takes 1 / (1 - busy) as long, and slows the runs it competes with as much (the
    queueing rule R = S / (1 - utilization)). On a saturated machine a freed slot buys nothing."""
    return start_seconds / (1 - min(max(cpu_busy, 0.0), MAX_CPU_BUSY))


class Deadlines(BaseModel):
    soft_seconds: float
    hard_seconds: float
    hot_window_seconds: float
    give_way_seconds: float | None = None  # None: hold the whole hot window even when runs queue for slots

    def give_way_after(self, reply_seconds: list[float], resume_seconds: float) -> float | None:
        """How long a wait holds its process slot while other runs queue for one; None: the whole window.

        Giving way costs a resume (`resume_seconds` of a new process re-running the flow to its wait);
        holding from `t` costs the slot until the reply or the window's end, and a resume anyway when the
        reply comes after the window. So the wait gives way at the first `t` (from the floor
        `give_way_seconds`) where the stage's recent replies later than `t` would, on average, hold the
        slot longer than a resume costs, or where no recent reply came that late. Fewer than MIN_REPLIES
        replies say nothing, and without evidence the wait behaves as it would without giving way: it holds
        the window (a fresh install learns from its first replies; a resume spent on a guess is lost)."""
        if self.give_way_seconds is None:
            return None
        hot = self.hot_window_seconds
        floor = min(self.give_way_seconds, hot)
        if len(reply_seconds) < MIN_REPLIES:
            return None
        for t in [floor, *sorted(r for r in reply_seconds if floor < r < hot)]:
            later = [r for r in reply_seconds if r > t]
            if not later:
                return t
            holding = statistics.fmean(min(r, hot) - t for r in later)
            caught = sum(1 for r in later if r <= hot) / len(later)
            if holding > resume_seconds * caught:
                return t
        return None

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
