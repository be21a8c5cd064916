"""Wait hot, then cold (design fact 8), measured side by side on one stack.

Run: .venv/bin/python bench/bench_hot_window.py [ROUNDS] [DELAY_SECONDS]   (default 3 rounds, 2 s)

Starts a LocalStack (Prefect server, emulator, receiver, served deployments) under a temp folder. The
emulator answers every query DELAY seconds late. Each round runs the five seed patients twice, one group
after the other: with a 30 s hot window (the reply lands while the run watches its row) and with none
(every wait suspends at once, the dispatcher resumes the run, the runner starts a new process). Prints
each group's run times (median, max: from creation to the final state seen) and the cold/hot ratio.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import StateType
from prefect.deployments import arun_deployment

from metriport_devtools.demo import create_patients
from metriport_devtools.stack import LocalStack
from metriport_flows.domain.patient_records import (
    PATIENT_RECORDS_DEPLOYMENT,
    PATIENT_RECORDS_PARAMETER,
)
from metriport_sandbox.seed import SEED_PATIENTS


async def run_group(client: PrefectClient, patient_ids: list[str], hot_window: float) -> list[float]:
    """Start one run per patient at once; seconds from creation to Completed, per run."""
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
    return list(took.values())


async def measure(stack: LocalStack, rounds: int) -> dict[str, list[float]]:
    patients = await create_patients(stack, list(SEED_PATIENTS), 0)
    ids = [patient.patient_id for patient in patients]
    times: dict[str, list[float]] = {"hot (30 s window)": [], "cold (suspend at once)": []}
    async with PrefectClient(api=stack.prefect_api_url) as client:
        for _ in range(rounds):
            times["hot (30 s window)"] += await run_group(client, ids, 30.0)
            times["cold (suspend at once)"] += await run_group(client, ids, 0.0)
    return times


def main(rounds: int, delay: float) -> None:
    with tempfile.TemporaryDirectory() as root, LocalStack(Path(root), delay=(delay, delay)) as stack:
        httpx.post(f"{stack.emulator_url}/_sandbox/config", json={"patient_limit": 1000}).raise_for_status()
        times = asyncio.run(measure(stack, rounds))
    print(f"patient-records, 5 seed patients at once, emulator replies {delay:.1f} s late, {rounds} round(s)")
    for label, values in times.items():
        print(f"  {label:24s} median {statistics.median(values):6.2f} s   max {max(values):6.2f} s   n={len(values)}")
    hot, cold = (statistics.median(values) for values in times.values())
    print(f"  cold / hot (median): {cold / hot:.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3, float(sys.argv[2]) if len(sys.argv) > 2 else 2.0)
