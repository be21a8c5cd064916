"""The chaos run's small version (`make chaos` runs 500 patients with more kills): 30 patients as a cohort
refresh on the session stack, with every Metriport fault of the big run on and the receiver SIGKILLed
once while the runs go. Every check of the audit must pass: nothing lost, nothing stuck, nothing twice.

Short deadlines (the stuck queries end at the hard deadline) and extra reconcile passes keep it to a
couple of minutes; the schedule's own passes still run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from metriport_devtools.chaos import ChaosPlan, run_chaos
from metriport_devtools.chaos_audit import audit
from metriport_devtools.stack import LocalStack
from metriport_sandbox.config import DEFAULT_RATE_LIMITS

pytestmark = pytest.mark.e2e


@pytest.fixture
def restored_emulator(sandbox_control: httpx.Client) -> Iterator[None]:
    """The session's emulator gets its faults cleared and its rate limits back, whatever happens."""
    yield
    sandbox_control.post("/faults", json={"spec": ""}).raise_for_status()
    sandbox_control.post("/config", json={"rate_limits": DEFAULT_RATE_LIMITS}).raise_for_status()


def test_thirty_patients_with_faults_and_a_receiver_kill_are_all_accounted_for(
    local_stack: LocalStack, restored_emulator: None
) -> None:
    plan = ChaosPlan(
        patients=30,
        receiver_kills=1,
        serve_kills=0,
        server_restarts=0,
        soft_deadline_seconds=10,
        hard_deadline_seconds=40,
        reconcile_every_seconds=5,
        timeout_seconds=420,
    )
    run = asyncio.run(run_chaos(local_stack, plan))
    checks = asyncio.run(audit(local_stack, run))
    failed = [(name, figure) for name, figure, passed in checks.rows if not passed]
    assert not failed, (failed, checks.problems[:20])
    assert [what for _, what in run.disruptions_done] == ["receiver"]
