"""What a process can learn about its machine (Linux /proc; neutral values elsewhere): how long it has
run, and how busy the CPUs it shares are. A wait weighs giving its slot back with them (tasks/waits.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def process_age_seconds() -> float:
    """Seconds since this process started (Linux /proc; 0 elsewhere, which makes a resume look free)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"))


def cpu_ticks() -> tuple[int, int] | None:
    """The machine's busy and total CPU ticks since boot (Linux /proc/stat; None elsewhere)."""
    try:
        ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)  # idle and iowait are not busy


class MachineLoad:
    """The share of time this machine's CPUs were busy between two calls (0 where unknown)."""

    def __init__(self) -> None:
        self._last = cpu_ticks()
        self._busy = 0.0

    def __call__(self) -> float:
        now = cpu_ticks()
        if now is None or self._last is None:
            return 0.0
        if now[1] > self._last[1]:  # a tick at least has passed
            self._busy = (now[0] - self._last[0]) / (now[1] - self._last[1])
            self._last = now
        return self._busy
