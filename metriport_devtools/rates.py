"""Reading a rate from the times of calls: how tests and benchmarks check a client against a limit."""

from __future__ import annotations


def most_in_any_interval(times: list[float], seconds: float) -> int:
    """The most times in any half-open interval [t, t + seconds)."""
    times = sorted(times)
    return max((sum(1 for u in times[i:] if u < t + seconds) for i, t in enumerate(times)), default=0)


def achieved_over_limit(times: list[float], per_window: int, window: float) -> float:
    """The rate after the first window's count (which may go at once), over the limit's rate."""
    times = sorted(times)
    if len(times) <= per_window or times[-1] == times[0]:
        return float("nan")
    return (len(times) - per_window) / (times[-1] - times[0]) / (per_window / window)
