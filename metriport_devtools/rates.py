"""Reading a rate from the times of calls: how tests and benchmarks check a client against a limit."""

from __future__ import annotations

import statistics


def most_in_any_interval(times: list[float], seconds: float) -> int:
    """The most times in any half-open interval [t, t + seconds)."""
    times = sorted(times)
    return max((sum(1 for u in times[i:] if u < t + seconds) for i, t in enumerate(times)), default=0)


def whole_run_over_limit(times: list[float], per_window: int, window: float) -> float:
    """The calls after the first window's count (which may go at once), per second from the first call
    to the last, over the limit's rate: what a run of this length achieved."""
    times = sorted(times)
    if len(times) <= per_window or times[-1] == times[0]:
        return float("nan")
    return (len(times) - per_window) / (times[-1] - times[0]) / (per_window / window)


def steady_over_limit(times: list[float], per_window: int, window: float) -> float:
    """The window over the mean time from each call to the call one window's count later: the rate the
    calls kept, without the spread of the first window's calls (how fast the runs arrived) that a short
    run's whole-run figure carries to its end."""
    times = sorted(times)
    gaps = [later - earlier for earlier, later in zip(times, times[per_window:], strict=False)]
    return window / statistics.mean(gaps) if gaps else float("nan")
