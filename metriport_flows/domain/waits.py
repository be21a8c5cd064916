"""How long a run waits for Metriport: a hot window in-process, a soft deadline after which the
reconciler asks Metriport, a hard deadline after which the wait ends as `timeout` (docs/design.md)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from metriport_flows.settings import Settings


class Deadlines(BaseModel):
    soft_seconds: float
    hard_seconds: float
    hot_window_seconds: float

    @classmethod
    def resolve(
        cls, settings: Settings, *, soft: float | None, hard: float | None, hot_window: float | None
    ) -> Deadlines:
        """A run's own values where it gave them, else the settings'; the hard deadline never comes
        before the soft one."""
        soft_seconds = soft or settings.soft_deadline_seconds
        return cls(
            soft_seconds=soft_seconds,
            hard_seconds=max(hard or settings.hard_deadline_seconds, soft_seconds),
            hot_window_seconds=settings.hot_window_seconds if hot_window is None else hot_window,
        )


class WaitTuning(BaseModel):
    """How a bulk flow's wait behaves; each default comes from settings (HOT_WINDOW_SECONDS, ...)."""

    hot_window_seconds: float | None = Field(None, ge=0, description="Watch in-process this long, then suspend")
    soft_deadline_seconds: float | None = Field(None, gt=0, description="After this the reconciler asks Metriport")
    hard_deadline_seconds: float | None = Field(None, gt=0, description="After this the wait ends as timeout")

    def deadlines(self, settings: Settings) -> Deadlines:
        return Deadlines.resolve(
            settings,
            soft=self.soft_deadline_seconds,
            hard=self.hard_deadline_seconds,
            hot_window=self.hot_window_seconds,
        )
