"""Metriport's rate limiter: a fixed window per (tenant, operation), express-rate-limit style.

A refused call gets 429 with the operation's plain-text message, the draft-6 `RateLimit-*` headers
(legacy `X-RateLimit-*` off) and `Retry-After`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from metriport_sandbox.errors import ApiError

MESSAGES = {
    "patientCreateOrUpdate": "Too many patient creates or updates, please try again later.",
    "documentQuery": "Too many patient document query starts, please try again later.",
    "consolidatedDataQuery": "Too many patient consolidated data query starts, please try again later.",
}


@dataclass
class Window:
    start: float
    hits: int = 0


class RateLimiter:
    def __init__(
        self, limits: dict[str, int], window_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = dict(limits)
        self.window_seconds = window_seconds
        self._clock = clock
        self._windows: dict[tuple[str, str], Window] = {}

    def reset(self) -> None:
        self._windows.clear()

    def hit(self, tenant: str, operation: str) -> dict[str, str]:
        """Count one call; return the headers for the response, or raise the 429."""
        limit = self.limits.get(operation)
        if limit is None:
            return {}
        now = self._clock()
        window = self._windows.get((tenant, operation))
        if window is None or now - window.start >= self.window_seconds:
            window = self._windows[(tenant, operation)] = Window(now)
        window.hits += 1
        reset = max(1, math.ceil(window.start + self.window_seconds - now))
        headers = {
            "RateLimit-Policy": f"{limit};w={math.ceil(self.window_seconds)}",
            "RateLimit-Limit": str(limit),
            "RateLimit-Remaining": str(max(0, limit - window.hits)),
            "RateLimit-Reset": str(reset),
        }
        if window.hits > limit:
            raise ApiError(429, MESSAGES[operation], "text/plain", {**headers, "Retry-After": str(reset)})
        return headers
