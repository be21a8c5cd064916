"""Wait hot, then cold (design fact 8), measured side by side on one stack.

Run: .venv/bin/python bench/bench_hot_window.py [ROUNDS] [DELAY_SECONDS]   (default 3 rounds, 2 s)

Starts a LocalStack (Prefect server, emulator, receiver, served deployments) under a temp folder. The
emulator answers every query DELAY seconds late. Each round runs the five seed patients twice, one group
after the other: with a 30 s hot window (the reply lands while the run watches its row) and with none
(every wait suspends at once, the dispatcher resumes the run, the runner forks a new process). Prints
each group's run times (median, max: from creation to the final state seen) and the cold/hot ratio; then,
from the inbox database, each group's webhook-to-code time: from the receiver storing the message that
resolved a wait (its 200 follows the commit) to the run's code after the wait reading the result
(goals: hot median <= 0.3 s and p95 <= 0.6 s; suspended median <= 2.5 s and p95 <= 4 s), split into
dispatch (stored -> wait resolved), delivery (resolved -> resume sent; suspended runs only) and the run
(-> code after the wait). Beside them, stock Prefect on the same stack (`stock_resume.py`, nothing of
ours): five runs at once suspend, are resumed at once, and the time from each resume call to the code
after its suspend is printed with the runner's default poll (10 s) and with a 1 s poll (ours polls 1 s).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC
from functools import partial
from pathlib import Path
from uuid import UUID, uuid4

import httpx
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import StateType
from prefect.deployments import arun_deployment
from sqlalchemy import func
from sqlmodel import Session, col, select

from metriport_devtools.demo import create_patients
from metriport_devtools.processes import http_ok, poll_until
from metriport_devtools.stack import LocalStack
from metriport_flows.domain.patient_records import (
    PATIENT_RECORDS_DEPLOYMENT,
    PATIENT_RECORDS_PARAMETER,
)
from metriport_flows.store import InboxMessage, Store
from metriport_sandbox.seed import SEED_PATIENTS

HERE = Path(__file__).parent
STOCK_POLLS = {"default poll (10 s)": 10, "1 s poll": 1}


async def run_group(client: PrefectClient, patient_ids: list[str], hot_window: float) -> dict[str, float]:
    """Start one run per patient at once; seconds from creation to Completed, per run id."""
    started: dict[str, float] = {}
    for patient_id in patient_ids:
        request = {"patient_id": patient_id, "hot_window_seconds": hot_window}
        run = await arun_deployment(
            PATIENT_RECORDS_DEPLOYMENT,
            client=client,
            timeout=0,
            as_subflow=False,
            parameters={PATIENT_RECORDS_PARAMETER: request},
        )
        started[str(run.id)] = time.monotonic()
    took: dict[str, float] = {}
    while len(took) < len(started):
        for run_id in set(started) - set(took):
            run = await client.read_flow_run(run_id)
            if run.state is not None and run.state.is_final():
                if run.state.type != StateType.COMPLETED:
                    raise SystemExit(f"run {run_id} ended {run.state.name}: {run.state.message}")
                took[run_id] = time.monotonic() - started[run_id]
        await asyncio.sleep(0.1)
    return took


async def measure(stack: LocalStack, rounds: int) -> dict[str, dict[str, float]]:
    patients = await create_patients(stack, list(SEED_PATIENTS), 0)
    ids = [patient.patient_id for patient in patients]
    times: dict[str, dict[str, float]] = {"hot (30 s window)": {}, "cold (suspend at once)": {}}
    async with PrefectClient(api=stack.prefect_api_url) as client:
        for _ in range(rounds):
            times["hot (30 s window)"].update(await run_group(client, ids, 30.0))
            times["cold (suspend at once)"].update(await run_group(client, ids, 0.0))
    return times


def webhook_to_code(store: Store, run_ids: list[str]) -> dict[str, list[float]]:
    """Per wait the runs read: seconds from storing its resolving message to the run's code after it."""
    parts: dict[str, list[float]] = {"total": [], "dispatch": [], "delivery": [], "run": []}
    with Session(store.engine) as session:
        for wait in (w for run_id in run_ids for w in store.waits_for_run(run_id)):
            if wait.resolved_at is None or wait.consumed_at is None:
                continue
            received = session.exec(
                select(func.max(col(InboxMessage.received_at))).where(
                    col(InboxMessage.wait_id) == wait.id, col(InboxMessage.received_at) <= wait.resolved_at
                )
            ).one()
            if received is None:
                continue
            received = received.replace(tzinfo=UTC)
            parts["total"].append((wait.consumed_at - received).total_seconds())
            parts["dispatch"].append((wait.resolved_at - received).total_seconds())
            if wait.delivered_at is not None:
                parts["delivery"].append((wait.delivered_at - wait.resolved_at).total_seconds())
                parts["run"].append((wait.consumed_at - wait.delivered_at).total_seconds())
            else:
                parts["run"].append((wait.consumed_at - wait.resolved_at).total_seconds())
    return parts


def serve_stock(stack: LocalStack) -> None:
    """One `stock_resume.py` runner per poll frequency, each serving its own deployment."""
    for poll in STOCK_POLLS.values():
        stack.start_service(
            f"stock-poll-{poll}",
            [sys.executable, "stock_resume.py", f"poll-{poll}"],
            cwd=HERE,
            PREFECT_RUNNER_POLL_FREQUENCY=str(poll),
        )


async def stock_group(client: PrefectClient, poll: int, stamps: Path, runs: int) -> list[float]:
    """`runs` stock runs suspend; each resume call to its code after the suspend, in seconds."""
    ids: dict[UUID, Path] = {}
    for _ in range(runs):
        stamp = stamps / f"{uuid4()}.stamp"
        run = await arun_deployment(
            f"stock-resume/poll-{poll}", client=client, timeout=0, as_subflow=False, parameters={"stamp": str(stamp)}
        )
        ids[run.id] = stamp
    while [run_id for run_id in ids if not await suspended(client, run_id)]:
        await asyncio.sleep(0.1)
    resumed: dict[UUID, float] = {}
    for run_id in ids:
        resumed[run_id] = time.time()
        await client.resume_flow_run(run_id)
    while not all(stamp.exists() and stamp.read_text() for stamp in ids.values()):
        await asyncio.sleep(0.1)
    return [float(ids[run_id].read_text()) - resumed[run_id] for run_id in ids]


async def suspended(client: PrefectClient, run_id: UUID) -> bool:
    state = (await client.read_flow_run(run_id)).state
    return state is not None and state.type == StateType.PAUSED


async def measure_stock(stack: LocalStack, rounds: int, stamps: Path) -> dict[str, list[float]]:
    for poll in STOCK_POLLS.values():
        served = f"{stack.prefect_api_url}/deployments/name/stock-resume/poll-{poll}"
        poll_until(partial(http_ok, served), timeout=120, what=f"stock-resume/poll-{poll} served")
    async with PrefectClient(api=stack.prefect_api_url) as client:
        return {
            label: [s for _ in range(rounds) for s in await stock_group(client, poll, stamps, len(SEED_PATIENTS))]
            for label, poll in STOCK_POLLS.items()
        }


def median_p95(values: list[float]) -> str:
    if len(values) < 2:
        return "n/a"
    p95 = statistics.quantiles(values, n=20, method="inclusive")[-1]
    return f"{statistics.median(values):5.2f} / {p95:5.2f} s"


def main(rounds: int, delay: float) -> None:
    with tempfile.TemporaryDirectory() as root, LocalStack(Path(root), delay=(delay, delay)) as stack:
        httpx.post(f"{stack.emulator_url}/_sandbox/config", json={"patient_limit": 1000}).raise_for_status()
        serve_stock(stack)
        times = asyncio.run(measure(stack, rounds))
        stamps = Path(root) / "stamps"
        stamps.mkdir()
        stock = asyncio.run(measure_stock(stack, rounds, stamps))
        store = Store(stack.database_url)
        latency = {label: webhook_to_code(store, list(runs)) for label, runs in times.items()}
        store.dispose()
    print(f"patient-records, 5 seed patients at once, emulator replies {delay:.1f} s late, {rounds} round(s)")
    for label, runs in times.items():
        values = list(runs.values())
        print(f"  {label:24s} median {statistics.median(values):6.2f} s   max {max(values):6.2f} s   n={len(values)}")
    hot, cold = (statistics.median(runs.values()) for runs in times.values())
    print(f"  cold / hot (median): {cold / hot:.2f}x")
    print("webhook to code (median / p95): goals hot <= 0.3 / 0.6 s, suspended <= 2.5 / 4 s")
    for label, parts in latency.items():
        split = "   ".join(f"{name} {median_p95(values)}" for name, values in parts.items() if name != "total")
        print(f"  {label:24s} {median_p95(parts['total'])}   ({split}; n={len(parts['total'])})")
    print("stock Prefect on the same stack, resume call to the code after the suspend (median / p95)")
    for label, seconds in stock.items():
        print(f"  {label:24s} {median_p95(seconds)}   (n={len(seconds)})")
    ours = statistics.median(latency["cold (suspend at once)"]["total"])
    anchor = statistics.median(stock["1 s poll"])
    print(f"  suspended webhook to code, ours / stock with a 1 s poll (median): {ours / anchor:.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3, float(sys.argv[2]) if len(sys.argv) > 2 else 2.0)
