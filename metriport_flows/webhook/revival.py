"""Runs that lost their process are brought back, a bounded number of times (docs/design.md, "Crashes").

A run crashes when its process dies under it (the Prefect server was away for a moment) or goes silent
when its whole worker dies (it stays Running or Pending with nobody behind it; Prefect's flow
heartbeats stop). Its waits are stored and its start calls are cached under its id, so scheduling the
same run again makes it re-run from the top and carry on where it was: stored resolutions are read,
started queries are not started again. Only the product's flows (`REVIVED_FLOWS`) are touched, each
run at most `Settings.revive_attempts` times; past that the run is failed with a message saying so,
and its waits are closed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from metriport_flows.settings import Settings
from metriport_flows.store import Store
from metriport_flows.webhook.protocols import Gateway

logger = logging.getLogger(__name__)

# The product's flows: re-run from the top, each carries on where it was (start calls cached under the
# run's id, waits stored, child runs keyed by the parent's id). `reconcile` is not among them: a crashed
# pass is simply the next minute's pass.
REVIVED_FLOWS = ("patient-records", "cohort-refresh", "bulk-patient-create", "bulk-document-download")
# A run is silent (its process gone) after this many missed heartbeats; a Pending run as long.
MISSED_HEARTBEATS = 3
# Runs expected to start longer ago than the hard deadline plus this are not looked at.
HORIZON_MARGIN = timedelta(hours=1)


class RevivalCounts(Protocol):
    silent: int
    revived: int
    revivals_given_up: int


@dataclass(frozen=True)
class Crash:
    """One crash of one run: `at` (when its state began) tells a new crash from one already handled."""

    run_id: str
    at: datetime
    reason: str


async def silent_runs(gateway: Gateway, now: datetime, expected_after: datetime) -> list[Crash]:
    """Running runs without a heartbeat for `MISSED_HEARTBEATS` beats, and runs Pending as long: their
    process is gone (or never started: the worker died after taking the run)."""
    beat = gateway.heartbeat_seconds
    if beat is None:
        return []
    silence = timedelta(seconds=beat * MISSED_HEARTBEATS)
    seconds = int(silence.total_seconds())
    crashes = []
    for state, reason in (
        ("RUNNING", f"no heartbeat for {seconds} s while Running: its process is gone"),
        ("PENDING", f"Pending for over {seconds} s: its process never started or is gone"),
    ):
        runs = await gateway.runs_in_state(state, REVIVED_FLOWS, expected_after)
        quiet = {run.id: run.state_since for run in runs if run.state_since and run.state_since <= now - silence}
        alive = await gateway.heartbeating(set(quiet), since=now - silence) if state == "RUNNING" else set()
        crashes += [Crash(run_id, at, reason) for run_id, at in sorted(quiet.items()) if at and run_id not in alive]
    return crashes


async def revive(store: Store, gateway: Gateway, settings: Settings, crash: Crash) -> bool | None:
    """Schedule the crashed run again (True), give up on it at the bound (False), or leave it (None:
    this crash was handled already, by this or another reconciler)."""
    run_id, reason, bound = crash.run_id, crash.reason, settings.revive_attempts
    attempt = store.count_revival(run_id, crash.at, bound, reason)
    if attempt is not None:
        message = f"brought back by the reconciler after a crash (revival {attempt} of {bound}): {reason}"
        await gateway.set_state(run_id, "SCHEDULED", message)
        logger.info("Reconciler: run %s scheduled again (revival %d of %d)", run_id, attempt, bound)
        return True
    revival = store.get_revival(run_id)
    if revival is None or revival.attempts < bound or not store.give_up_revival(run_id, crash.at, reason):
        return None
    message = f"crashed again after {bound} revival(s) by the reconciler, its bound (REVIVE_ATTEMPTS): {reason}"
    await gateway.set_state(run_id, "FAILED", message)
    for wait in store.live_waits_for_run(run_id):
        store.abandon_wait(wait.id, "its run crashed too often and was failed")
    logger.warning("Reconciler: run %s failed after %d revival(s)", run_id, bound)
    return False


async def revive_crashed_runs(
    store: Store, gateway: Gateway, settings: Settings, now: datetime, report: RevivalCounts
) -> None:
    """Silent runs are marked Crashed; every crashed run of the product's flows is revived or given up."""
    expected_after = now - timedelta(seconds=settings.hard_deadline_seconds) - HORIZON_MARGIN
    crashed = await gateway.runs_in_state("CRASHED", REVIVED_FLOWS, expected_after)
    crashes = [
        Crash(run.id, run.state_since, (run.state_message or "crashed")[:200])
        for run in crashed
        if run.state_since is not None
    ]
    for silent in await silent_runs(gateway, now, expected_after):
        await gateway.set_state(silent.run_id, "CRASHED", silent.reason)
        report.silent += 1
        crashes.append(silent)
    for crash in crashes:
        try:
            outcome = await revive(store, gateway, settings, crash)
        except Exception as exc:  # the next run is still looked at; this one again on the next pass
            logger.warning("Reconciler could not revive run %s: %s", crash.run_id, type(exc).__name__)
            continue
        if outcome is True:
            report.revived += 1
        elif outcome is False:
            report.revivals_given_up += 1
