"""How long a run waits for Metriport: a hot window in-process, a soft deadline after which the
reconciler asks Metriport, a hard deadline after which the wait ends as `timeout` (docs/design.md)."""

from __future__ import annotations

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


class Deadlines(BaseModel):
    soft_seconds: float
    hard_seconds: float
    hot_window_seconds: float

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
        )


class WaitTuning(BaseModel):
    """How a bulk flow's wait behaves; each default comes from settings (HOT_WINDOW_SECONDS, ...)."""

    hot_window_seconds: float | None = Field(None, ge=0, description="Watch in-process this long, then suspend")
    soft_deadline_seconds: float | None = Field(None, gt=0, description="After this the reconciler asks Metriport")
    hard_deadline_seconds: float | None = Field(None, gt=0, description="After this the wait ends as timeout")

    def deadlines(self, settings: Settings) -> Deadlines:
        return Deadlines.of(self, settings)
