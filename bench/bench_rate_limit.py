"""Metriport's rate limit as the ceiling: a cohort refresh larger than one window, under Metriport's limits.

Run: .venv/bin/python bench/bench_rate_limit.py [N] [WINDOW_SECONDS]   (default 100 and 60)

The embedded stack under a temp folder; the emulator enforces Metriport's counts (20 document queries and
120 consolidated queries per window) in a window of WINDOW_SECONDS (60 is Metriport's; a shorter one
scales the rate up in proportion), and our schedule gets the same window with the default margin in
proportion (1 s in 60 s). One cohort-refresh run of N patients with seed first names. Printed from what
the emulator admitted and refused: per operation the calls, the 429s, the most calls in any window, and
the achieved rate over the limit: the calls after the first window's count, per second from the first to
the last call, over count / window; and the steady rate: the window over the mean time from each call to
the one a window's count later (goal >= 0.95, no 429).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import httpx
from bench_scale import create_patients, run_cohort

from metriport_devtools.chaos import bound_to
from metriport_devtools.rates import most_in_any_interval, steady_over_limit, whole_run_over_limit
from metriport_devtools.stack import LocalStack
from metriport_flows.domain.cohort import CohortParams
from metriport_flows.domain.rate_limits import RateLimitSettings

LIMITED = {"documentQuery": "document query", "consolidatedDataQuery": "consolidated query"}


async def cohort(stack: LocalStack, n: int, window: float, limits: dict[str, int]) -> tuple[dict, int, float]:
    async with httpx.AsyncClient(base_url=f"{stack.emulator_url}/_sandbox", timeout=60) as control:
        raised = {"patientCreateOrUpdate": 1_000_000}
        (await control.post("/config", json={"rate_limits": raised, "patient_limit": 1_000_000})).raise_for_status()
        patient_ids = await create_patients(stack, n)
        (await control.post("/config", json={"rate_limits": limits, "rate_limit_window": window})).raise_for_status()
        params = CohortParams(patient_ids=patient_ids, create_interval_seconds=0.0, follow_minutes=180)
        runs, seconds = await run_cohort(stack, params)
        seen = (await control.get("/rate-limits")).json()
    return seen, sum(1 for r in runs if r.state and r.state.is_completed()), seconds


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    window = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    ours = RateLimitSettings(window_seconds=window, margin_seconds=window / 60, _env_file=None)
    limits = {"documentQuery": ours.document_query, "consolidatedDataQuery": ours.consolidated_query}
    env = {"METRIPORT_RATE_WINDOW_SECONDS": str(window), "METRIPORT_RATE_MARGIN_SECONDS": str(window / 60)}
    with tempfile.TemporaryDirectory(prefix="bench-rate-") as tmp:
        stack = LocalStack(Path(tmp), extra_env=env)
        with stack, bound_to(stack):
            seen, completed, seconds = asyncio.run(cohort(stack, n, window, limits))
    print(f"\ncohort refresh of {n} patients under Metriport's limits, window {window:g} s: {completed} completed")
    print(f"in {seconds:.0f} s")
    print(
        f"{'operation':<20}{'limit':>7}{'calls':>7}{'429s':>6}{'most in a window':>18}"
        f"{'steady / limit':>16}{'whole run / limit':>19}"
    )
    ok = completed == n
    for name, label in LIMITED.items():
        record = seen.get(name, {"admitted": [], "refused": 0})
        admitted, per_window = record["admitted"], limits[name]
        print(
            f"{label:<20}{per_window:>7}{len(admitted):>7}{record['refused']:>6}"
            f"{most_in_any_interval(admitted, window):>18}{steady_over_limit(admitted, per_window, window):>16.3f}"
            f"{whole_run_over_limit(admitted, per_window, window):>19.3f}"
        )
        ok = ok and record["refused"] == 0
    print(
        "goal: document queries at >= 0.95 of the limit (steady), no 429. The whole-run figure also carries how\n"
        "fast the first window's calls came (the runs' start-up) and approaches the steady one as N grows."
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
