"""A cohort refresh of N patients on the embedded stack and on the scale-out stack, side by side.

Run: .venv/bin/python bench/bench_scale.py [N] [HOT_WINDOW_SECONDS] [--stacks both|embedded|scale-out]
(default 1000, 30 and both)

For each stack (embedded: Prefect on SQLite, `serve`; scale-out: Prefect and the inbox on PostgreSQL, two
receiver processes, two work-pool workers) with the same 10 process slots (two workers of 5: on one
machine more slots only oversubscribe its cores, so the engines and not the slot counts are compared),
and each size (N/10, then N), a fresh stack under a temp
folder, Metriport's rate limits raised (the emulator's and ours, so the stacks and not Metriport are
measured), N patients with seed first names (so each has documents), one cohort-refresh run. Printed per
run: runs created per second, patients completed per minute, per-patient time (created -> ended) median
and p95, peak RSS of the stack's whole process tree, Prefect API errors the logs show (503, database
locked), and under the table each run's peak memory and CPU seconds per kind of process (flow-run
processes apart from the services); then the ratios scale-out / embedded at N and the per-patient cost at N over N/10 per stack
(goal <= 1.2). The scale-out rows are skipped, with the reason, when PostgreSQL does not answer.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path

import httpx
import typer
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import arun_deployment

from metriport_devtools.chaos import COHORT_DEPLOYMENT, FACILITY, bound_to, patient_runs
from metriport_devtools.footprint import Footprint, StackSampler
from metriport_devtools.postgres import admin_url, answers
from metriport_devtools.stack import LocalStack
from metriport_flows.client.api import MedicalApi
from metriport_flows.client.models import Demographics
from metriport_flows.domain.cohort import CohortParams
from metriport_sandbox.seed import SEED_PATIENTS

RAISED = 1_000_000  # calls per window: Metriport's limits out of the way
SLOTS = 10  # flow-run processes at once: `serve`'s limit, or split over the two workers
API_ERRORS = re.compile(r"503 Service Unavailable|database is locked|retryable status code")


@dataclass
class Result:
    stack: str
    patients: int
    seconds: float
    created_per_second: float
    completed_per_minute: float
    median: float
    p95: float
    api_errors: int
    completed: int
    footprint: Footprint = field(default_factory=Footprint)

    @property
    def peak_rss_mib(self) -> float:
        return self.footprint.peak_total_kib / 1024

    @property
    def cost(self) -> float:
        """Wall seconds per patient."""
        return self.seconds / self.patients


async def create_patients(stack: LocalStack, n: int) -> list[str]:
    seeds = list(SEED_PATIENTS.values())
    async with MedicalApi.from_settings(stack.settings()) as api:
        facility = await api.create_facility(FACILITY)
        ids = []
        for k in range(n):
            body = {**seeds[k % len(seeds)].demographics(), "lastName": f"Scale{k:05d}"}
            ids.append((await api.create_patient(facility.id, Demographics.model_validate(body))).id)
        return ids


async def run_cohort(stack: LocalStack, params: CohortParams) -> tuple[list[FlowRun], float]:
    """One cohort-refresh run, followed until it is final: its patients' runs and the wall seconds."""
    since, began = datetime.now(UTC), time.monotonic()
    async with PrefectClient(api=stack.prefect_api_url) as client:
        parameters = {"params": params.model_dump(mode="json", exclude_defaults=True)}
        run = await arun_deployment(
            COHORT_DEPLOYMENT, client=client, timeout=0, as_subflow=False, parameters=parameters
        )
        while not ((state := (await client.read_flow_run(run.id)).state) and state.is_final()):
            await asyncio.sleep(5)
        seconds = time.monotonic() - began
        return await patient_runs(client, since), seconds


async def unlimited_cohort(stack: LocalStack, n: int, hot_window: float | None = None) -> tuple[list[FlowRun], float]:
    """Metriport's limits raised, N new patients, one cohort-refresh run of them all at once."""
    async with httpx.AsyncClient(base_url=f"{stack.emulator_url}/_sandbox", timeout=60) as control:
        limits = {"documentQuery": RAISED, "consolidatedDataQuery": RAISED, "patientCreateOrUpdate": RAISED}
        (await control.post("/config", json={"rate_limits": limits, "patient_limit": RAISED})).raise_for_status()
    params = CohortParams(
        patient_ids=await create_patients(stack, n),
        hot_window_seconds=hot_window,
        create_interval_seconds=0.0,
        manage_rate_limits=False,
        follow_minutes=180,
        poll_seconds=5.0,
    )
    return await run_cohort(stack, params)


async def cohort(stack: LocalStack, n: int, hot_window: float) -> Result:
    runs, seconds = await unlimited_cohort(stack, n, hot_window)
    created = sorted(r.created for r in runs if r.created)
    spans = sorted((r.end_time - r.created).total_seconds() for r in runs if r.end_time and r.created)
    completed = sum(1 for r in runs if r.state and r.state.is_completed())
    first_to_last = (created[-1] - created[0]).total_seconds() if len(created) > 1 else 0.0
    errors = sum(len(API_ERRORS.findall(log.read_text(errors="replace"))) for log in stack.logs_dir.glob("*.log"))
    return Result(
        stack="scale-out" if stack.databases else "embedded",
        patients=n,
        seconds=seconds,
        created_per_second=(len(created) - 1) / first_to_last if first_to_last else float("nan"),
        completed_per_minute=completed / seconds * 60,
        median=statistics.median(spans) if spans else float("nan"),
        p95=statistics.quantiles(spans, n=20, method="inclusive")[-1] if len(spans) > 1 else float("nan"),
        api_errors=errors,
        completed=completed,
    )


def measure(scale_out: bool, n: int, hot_window: float) -> Result:
    env = {"METRIPORT_RATE_DOCUMENT_QUERY": str(RAISED), "METRIPORT_RATE_CONSOLIDATED_QUERY": str(RAISED)}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        slots = SLOTS // 2 if scale_out else SLOTS  # per worker: both stacks share this machine's cores
        stack = LocalStack(
            Path(tmp), scale_out=scale_out, hot_window_seconds=hot_window, extra_env=env, runner_process_limit=slots
        )
        with stack, bound_to(stack), StackSampler(stack.pids) as sampler:
            result = asyncio.run(cohort(stack, n, hot_window))
        result.footprint = sampler.footprint
    return result


class Stacks(str, Enum):
    both = "both"
    embedded = "embedded"
    scale_out = "scale-out"


def main(
    n: int = typer.Argument(1000, help="Patients in the big cohort; the small one has N/10"),
    hot_window: float = typer.Argument(30.0, help="Hot window seconds"),
    stacks: Stacks = typer.Option(Stacks.both, help="Which stacks to run"),
) -> None:
    chosen = {Stacks.both: [False, True], Stacks.embedded: [False], Stacks.scale_out: [True]}[stacks]
    if True in chosen and not answers(admin_url()):
        print(f"PostgreSQL does not answer at {admin_url()}: the scale-out stack is skipped")
        chosen.remove(True)
    results = {(s, size): measure(s, size, hot_window) for s in chosen for size in (max(1, n // 10), n)}
    print(f"\ncohort refresh, hot window {hot_window:g} s, Metriport's rate limits raised")
    print(
        f"{'stack':<10}{'N':>6}{'done':>6}{'wall s':>9}{'created/s':>11}{'done/min':>10}"
        f"{'median s':>10}{'p95 s':>8}{'peak MiB':>10}{'API errs':>10}"
    )
    for r in results.values():
        print(
            f"{r.stack:<10}{r.patients:>6}{r.completed:>6}{r.seconds:>9.1f}{r.created_per_second:>11.2f}"
            f"{r.completed_per_minute:>10.1f}{r.median:>10.1f}{r.p95:>8.1f}{r.peak_rss_mib:>10.0f}{r.api_errors:>10}"
        )
    for r in results.values():
        print(f"{r.stack} {r.patients}: {r.footprint.summary()}")
    for s in chosen:
        small, big = results[(s, max(1, n // 10))], results[(s, n)]
        print(f"{big.stack}: per-patient cost at {n} / at {small.patients}: {big.cost / small.cost:.2f} (goal <= 1.2)")
    if len(chosen) == 2:
        embedded, scaled = results[(False, n)], results[(True, n)]
        print(
            f"scale-out / embedded at {n}: patients per minute {scaled.completed_per_minute / embedded.completed_per_minute:.2f}, "
            f"runs created per second {scaled.created_per_second / embedded.created_per_second:.2f}, "
            f"peak memory {scaled.peak_rss_mib / embedded.peak_rss_mib:.2f}"
        )
    if not all(r.completed == r.patients for r in results.values()):
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
