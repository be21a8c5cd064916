"""No idle slots: a cohort on the embedded stack with the hot window held whole vs giving way, side by side.

Run: .venv/bin/python bench/bench_slots.py [N] [HOT_WINDOW_SECONDS] [--delay MIN,MAX]
(default 200, 30 and the emulator's default webhook delays, 0,5 seconds)

For each mode, a fresh embedded stack under a temp folder (the runner serves 10 runs at once), the
emulator's webhook delays, Metriport's rate limits raised (the emulator's and ours, so the slots and not
Metriport are measured), N patients with seed first names, one cohort-refresh run of all. The modes:
"fixed" (HOT_WINDOW_GIVE_WAY=false: each wait holds its slot for the whole hot window or until its reply)
and "give way" (the default: with runs queued for a slot, a wait suspends and frees its slot once holding
on costs more than the resume it would need; docs/design.md fact 8). `--delay 20,40` shows a Metriport
slower than a process start, where giving way pays.

Printed per mode: patients completed per minute, the share of the slots' time held by a waiting run (from
each start call's answer to its reply or its suspend, over slots x wall time), and where a patient's time
goes (medians per patient, seconds): queued for a slot (created -> picked up), process start (picked up ->
running), Metriport (start call answered -> its webhook stored), dispatch (webhook stored -> wait
resolved), resume (resolved -> the run's code reads it; a suspended wait's includes the runner's poll,
a new slot and a new process) and the whole run; and how busy the machine's CPUs were meanwhile. Then the patients-per-minute ratio give way / fixed.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import typer
from bench_scale import RAISED, unlimited_cohort
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun
from sqlalchemy import func
from sqlmodel import Session, col, select

from metriport_devtools.chaos import bound_to
from metriport_devtools.stack import LocalStack
from metriport_flows.machine import MachineLoad
from metriport_flows.store import InboxMessage, Store, Wait

MODES = {"fixed": "false", "give way": "true"}
PARTS = ("queued", "process start", "Metriport", "dispatch", "resume", "whole run")


@dataclass
class ModeResult:
    mode: str
    completed: int
    seconds: float
    slots: int
    held_seconds: float = 0.0
    cpu_busy: float = float("nan")
    suspended_waits: int = 0
    parts: dict[str, list[float]] = field(default_factory=lambda: {part: [] for part in PARTS})

    @property
    def per_minute(self) -> float:
        return self.completed / self.seconds * 60

    @property
    def held_share(self) -> float:
        return self.held_seconds / (self.slots * self.seconds)


def webhook_stored(session: Session, wait: Wait) -> datetime | None:
    """When the receiver stored the message that resolved the wait (its last before the resolution)."""
    if wait.resolved_at is None:
        return None
    stored = session.exec(
        select(func.max(col(InboxMessage.received_at))).where(
            col(InboxMessage.wait_id) == wait.id, col(InboxMessage.received_at) <= wait.resolved_at
        )
    ).one()
    return stored.replace(tzinfo=UTC) if stored is not None else None


def add_waits(outcome: ModeResult, store: Store, run: FlowRun) -> None:
    """The run's waits: slot time held while waiting, and its Metriport, dispatch and resume parts."""
    totals = dict.fromkeys(("Metriport", "dispatch", "resume"), 0.0)
    with Session(store.engine) as session:
        for wait in store.waits_for_run(str(run.id)):
            if wait.requested_at is None or wait.resolved_at is None or wait.consumed_at is None:
                continue
            held_until = wait.suspended_at or wait.resolved_at
            outcome.held_seconds += max((held_until - wait.requested_at).total_seconds(), 0.0)
            outcome.suspended_waits += wait.suspended_at is not None
            stored = webhook_stored(session, wait) or wait.resolved_at
            totals["Metriport"] += (stored - wait.requested_at).total_seconds()
            totals["dispatch"] += (wait.resolved_at - stored).total_seconds()
            totals["resume"] += (wait.consumed_at - wait.resolved_at).total_seconds()
    for part, seconds in totals.items():
        outcome.parts[part].append(seconds)


async def add_start(outcome: ModeResult, client: PrefectClient, run: FlowRun) -> None:
    """Queued for a slot (created -> first Pending) and process start (-> first Running)."""
    states = sorted(await client.read_flow_run_states(run.id), key=lambda s: s.timestamp)
    pending = next((s.timestamp for s in states if s.type.value == "PENDING"), None)
    running = next((s.timestamp for s in states if s.type.value == "RUNNING"), None)
    if run.created is not None and pending is not None and running is not None:
        outcome.parts["queued"].append((pending - run.created).total_seconds())
        outcome.parts["process start"].append((running - pending).total_seconds())
    if run.created is not None and run.end_time is not None:
        outcome.parts["whole run"].append((run.end_time - run.created).total_seconds())


async def cohort(stack: LocalStack, mode: str, n: int) -> ModeResult:
    load = MachineLoad()
    runs, seconds = await unlimited_cohort(stack, n)
    done = [r for r in runs if r.state and r.state.is_completed()]
    outcome = ModeResult(mode, len(done), seconds, stack.runner_process_limit, cpu_busy=load())
    store = Store(stack.database_url)
    try:
        async with PrefectClient(api=stack.prefect_api_url) as client:
            for run in done:
                await add_start(outcome, client, run)
                add_waits(outcome, store, run)
    finally:
        store.dispose()
    return outcome


def measure(mode: str, n: int, hot_window: float, delay: tuple[float, float]) -> ModeResult:
    env = {
        "METRIPORT_RATE_DOCUMENT_QUERY": str(RAISED),
        "METRIPORT_RATE_CONSOLIDATED_QUERY": str(RAISED),
        "HOT_WINDOW_GIVE_WAY": MODES[mode],
    }
    with tempfile.TemporaryDirectory(prefix="bench-slots-") as tmp:
        stack = LocalStack(Path(tmp), hot_window_seconds=hot_window, delay=delay, extra_env=env)
        with stack, bound_to(stack):
            return asyncio.run(cohort(stack, mode, n))


def main(
    n: int = typer.Argument(200, help="Patients in the cohort"),
    hot_window: float = typer.Argument(30.0, help="Hot window seconds"),
    delay: str = typer.Option("0,5", help="The emulator's webhook delays: MIN,MAX seconds"),
) -> None:
    low, high = (float(part) for part in delay.split(","))
    outcomes = [measure(mode, n, hot_window, (low, high)) for mode in MODES]
    print(
        f"\ncohort of {n} at once, embedded stack, hot window {hot_window:g} s, webhook delays {delay} s, limits raised"
    )
    print(
        f"{'mode':<10}{'done':>6}{'wall s':>9}{'done/min':>10}{'slot time held waiting':>24}{'suspended':>11}{'CPU busy':>10}"
    )
    for o in outcomes:
        print(
            f"{o.mode:<10}{o.completed:>6}{o.seconds:>9.1f}{o.per_minute:>10.1f}{o.held_share:>24.0%}"
            f"{o.suspended_waits:>11}{o.cpu_busy:>10.0%}"
        )
    print("where a patient's time goes (median seconds per patient)")
    print(f"{'mode':<10}" + "".join(f"{part:>15}" for part in PARTS))
    for o in outcomes:
        medians = (statistics.median(o.parts[p]) if o.parts[p] else float("nan") for p in PARTS)
        print(f"{o.mode:<10}" + "".join(f"{m:>15.2f}" for m in medians))
    fixed, give_way = outcomes
    print(f"patients per minute, give way / fixed: {give_way.per_minute / fixed.per_minute:.2f}")
    if not all(o.completed == n for o in outcomes):
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
