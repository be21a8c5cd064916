"""The chaos run's small version (`make chaos` runs 500 patients with more kills): 30 patients as a cohort
refresh with every Metriport fault of the big run on and the receiver SIGKILLed once while the runs go.
Every check of the audit must pass: nothing lost, nothing stuck, nothing twice.

It has a stack of its own, so its kills and its load never reach the session's other tests. Short
deadlines (the stuck queries end at the hard deadline) and extra reconcile passes keep it to a couple of
minutes; the schedule's own passes still run.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from metriport_devtools.chaos import ChaosPlan, run_chaos
from metriport_devtools.chaos_audit import audit
from metriport_devtools.stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def test_thirty_patients_with_faults_and_a_receiver_kill_are_all_accounted_for(tmp_path: Path) -> None:
    plan = ChaosPlan(
        patients=30,
        receiver_kills=1,
        serve_kills=0,
        server_restarts=0,
        soft_deadline_seconds=8,
        hard_deadline_seconds=25,
        reconcile_every_seconds=4,
        timeout_seconds=420,
    )
    with LocalStack(tmp_path / "stack", hot_window_seconds=3, delay=(0.0, 1.0)) as stack:
        run = asyncio.run(run_chaos(stack, plan))
        checks = asyncio.run(audit(stack, run))
    assert not stack.any_alive(), f"processes of the chaos stack survived stop(): {stack.pids()}"
    failed = [(name, figure) for name, figure, passed in checks.rows if not passed]
    assert not failed, (failed, checks.problems[:20])
    assert [what for _, what in run.disruptions_done] == ["receiver"]
