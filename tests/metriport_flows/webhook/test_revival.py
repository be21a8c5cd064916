"""Crashed and silent runs are brought back under the same id, a bounded number of times: the reconciler's
revival step against a real store (SQLite and, when set, PostgreSQL) and Prefect as a recording gateway.
The real Prefect server's side (heartbeat events, forced states, the runner picking the run up again) is
tested end to end in tests/e2e/test_crash_recovery.py."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from metriport_flows.domain.stages import Stage
from metriport_flows.settings import Settings
from metriport_flows.store import Store, WaitStatus, utcnow
from metriport_flows.webhook.protocols import RunView
from metriport_flows.webhook.reconciler import ReconcileReport
from metriport_flows.webhook.revival import REVIVED_FLOWS, revive_crashed_runs
from tests.fixtures.inbox import RecordingGateway, make_settings


@pytest.fixture
def settings(tmp_path: Path, store: Store) -> Settings:
    return make_settings(tmp_path, store, revive_attempts=2)


def run_with_wait(store: Store, gateway: RecordingGateway, state: str, stage: Stage = Stage.documents) -> str:
    run_id = str(uuid.uuid4())
    now = utcnow()
    store.register_wait(
        flow_run_id=run_id,
        stage=stage,
        attempt=1,
        patient_id="pat-1",
        soft_deadline=now + timedelta(minutes=10),
        hard_deadline=now + timedelta(hours=6),
    )
    crash(gateway, run_id, state)
    return run_id


def crash(gateway: RecordingGateway, run_id: str, state: str = "CRASHED") -> None:
    """The run enters `state` now (a new crash when CRASHED)."""
    gateway.runs[run_id] = RunView(state, "Crashed" if state == "CRASHED" else state.title(), None)
    gateway.since[run_id] = utcnow()


async def one_pass(store: Store, gateway: RecordingGateway, settings: Settings) -> ReconcileReport:
    report = ReconcileReport(started_at=utcnow())
    await revive_crashed_runs(store, gateway, settings, utcnow(), report)
    return report


async def test_a_crashed_run_is_scheduled_again_and_others_are_left_alone(store, settings) -> None:
    gateway = RecordingGateway()
    crashed = run_with_wait(store, gateway, "CRASHED")
    suspended = run_with_wait(store, gateway, "PAUSED")
    stranger = str(uuid.uuid4())  # a crashed run of some other flow of the workspace
    crash(gateway, stranger)
    gateway.flow_names[stranger] = "someone-elses-flow"

    report = await one_pass(store, gateway, settings)

    assert report.revived == 1
    assert [(run, state) for run, state, _ in gateway.state_changes] == [(crashed, "SCHEDULED")]
    assert "revival 1 of 2" in gateway.state_changes[0][2]
    assert gateway.runs[suspended].state_type == "PAUSED" and gateway.runs[stranger].state_type == "CRASHED"
    assert store.get_revival(crashed).attempts == 1


async def test_past_the_bound_the_run_is_failed_with_a_clear_message_and_its_waits_closed(store, settings) -> None:
    gateway = RecordingGateway()
    run_id = run_with_wait(store, gateway, "CRASHED")
    for expected in (1, 2):
        await one_pass(store, gateway, settings)
        assert store.get_revival(run_id).attempts == expected
        crash(gateway, run_id)  # it crashed again

    report = await one_pass(store, gateway, settings)

    assert (report.revived, report.revivals_given_up) == (0, 1)
    run, state, message = gateway.state_changes[-1]
    assert (run, state) == (run_id, "FAILED")
    assert "after 2 revival(s)" in message and "REVIVE_ATTEMPTS" in message
    assert [w.status for w in store.waits_for_run(run_id)] == [WaitStatus.abandoned.value]
    assert (await one_pass(store, gateway, settings)).revivals_given_up == 0, "given up once"


async def test_runs_without_heartbeats_or_pending_too_long_are_marked_crashed_and_revived(store, settings) -> None:
    gateway = RecordingGateway(heartbeat_seconds=30)
    silent = run_with_wait(store, gateway, "RUNNING")
    beating = run_with_wait(store, gateway, "RUNNING")
    fresh = run_with_wait(store, gateway, "RUNNING")  # Running for less than three beats: not judged yet
    stuck = run_with_wait(store, gateway, "PENDING")  # its worker died after taking it
    starting = run_with_wait(store, gateway, "PENDING")
    now = utcnow()
    long_ago = now - timedelta(minutes=5)
    gateway.since |= {silent: long_ago, beating: long_ago, fresh: now, stuck: long_ago, starting: now}
    gateway.beats[silent] = [now - timedelta(minutes=4)]
    gateway.beats[beating] = [now - timedelta(seconds=20)]

    report = await one_pass(store, gateway, settings)

    assert (report.silent, report.revived) == (2, 2)
    changes = [(run, state) for run, state, _ in gateway.state_changes]
    assert sorted(changes) == sorted(
        [(silent, "CRASHED"), (stuck, "CRASHED"), (silent, "SCHEDULED"), (stuck, "SCHEDULED")]
    )
    messages = {run: message for run, state, message in gateway.state_changes if state == "CRASHED"}
    assert "no heartbeat for 90 s" in messages[silent] and "Pending for over 90 s" in messages[stuck]


async def test_without_heartbeats_configured_no_running_run_is_judged(store, settings) -> None:
    gateway = RecordingGateway(heartbeat_seconds=None)
    run_id = run_with_wait(store, gateway, "RUNNING")
    gateway.since[run_id] = utcnow() - timedelta(hours=1)
    assert (await one_pass(store, gateway, settings)).silent == 0
    assert gateway.state_changes == []


async def test_reconcilers_at_once_revive_a_run_once(store, settings) -> None:
    gateway = RecordingGateway()
    run_id = run_with_wait(store, gateway, "CRASHED")
    passes = (asyncio.to_thread(asyncio.run, one_pass(store, gateway, settings)) for _ in range(4))
    reports = await asyncio.gather(*passes)
    assert sum(r.revived for r in reports) == 1
    assert store.get_revival(run_id).attempts == 1


def test_the_revived_flows_are_the_products_flows_by_their_real_names() -> None:
    from flows.bulk_document_download import bulk_document_download
    from flows.bulk_patient_create import bulk_patient_create
    from flows.cohort_refresh import cohort_refresh
    from flows.patient_records import patient_records

    flows = (patient_records, cohort_refresh, bulk_patient_create, bulk_document_download)
    assert set(REVIVED_FLOWS) == {flow.name for flow in flows}
