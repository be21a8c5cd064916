"""Metriport's rate limiter: a fixed window per (tenant, operation), express-rate-limit style.

A refused call gets 429 with the operation's plain-text message, the draft-6 `RateLimit-*` headers
(legacy `X-RateLimit-*` off) and `Retry-After`. The limiter keeps what it admitted (epoch times) and
refused per operation, so a test or a benchmark can check a client against Metriport's own view.
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
        self.admitted: dict[str, list[float]] = {}
        self.refused: dict[str, int] = {}

    def reset(self) -> None:
        self._windows.clear()
        self.admitted.clear()
        self.refused.clear()

    def record(self) -> dict[str, dict[str, object]]:
        """Per operation: the limit, the epoch times of the admitted calls, and how many were refused."""
        operations = sorted(set(self.admitted) | set(self.refused))
        return {
            op: {
                "limit": self.limits.get(op),
                "window_seconds": self.window_seconds,
                "admitted": list(self.admitted.get(op, [])),
                "refused": self.refused.get(op, 0),
            }
            for op in operations
        }

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
            self.refused[operation] = self.refused.get(operation, 0) + 1
            raise ApiError(429, MESSAGES[operation], "text/plain", {**headers, "Retry-After": str(reset)})
        self.admitted.setdefault(operation, []).append(time.time())
        return headers
