"""Cohort refresh tasks: collect the patients, start one patient-records run each, follow them.

Runs are created one after another with a pause between them, because the embedded SQLite Prefect
server refuses bursts of creates (docs/prefect.md); each create carries an idempotency key made of the
cohort run and the patient, so a retried cohort never starts a patient twice. A busy server's 503 goes to
our own short retries at once: Prefect's client would sleep 2 s, 4, 8, 16 first, and one create met 30 s
of that under a cohort's load (docs/prefect.md §3). Following polls the runs
in batches until every one is final or the follow deadline passes; runs still waiting then (Metriport
can take hours) are reported, not failed. Everything logged or reported is an id or a count.

Requires: a Prefect API; METRIPORT_* settings for "all patients of a facility"; DATABASE_URL for the
per-stage counts.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from prefect import Task, get_run_logger, task
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, State, StateType, TaskRun
from prefect.deployments import arun_deployment
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

from metriport_flows.client.errors import is_transient
from metriport_flows.domain.cohort import (
    CohortInputError,
    PatientRun,
    check_patient_ids,
    read_patient_ids_csv,
    unique,
)
from metriport_flows.domain.patient_records import PATIENT_RECORDS_DEPLOYMENT
from metriport_flows.webhook.prefect_api import prefect_client

READ_BATCH = 200
FAILED_TYPES = {StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}
FINAL_TYPES = FAILED_TYPES | {StateType.COMPLETED}


def run_status(run: FlowRun) -> str:
    """completed, failed, or waiting (scheduled, running, suspended: not final yet)."""
    state_type = run.state.type if run.state else None
    if state_type == StateType.COMPLETED:
        return "completed"
    if state_type in FAILED_TYPES:
        return "failed"
    return "waiting"


def _retrying() -> AsyncRetrying:
    """A busy server (503) or a dropped connection, retried for up to a minute with a short backoff."""
    return AsyncRetrying(
        retry=retry_if_exception(is_transient),
        wait=wait_exponential_jitter(initial=0.2, max=4),
        stop=stop_after_delay(60),
        reraise=True,
    )


def _worth_retrying(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Metriport or the network may recover; a bad CSV or a missing file will not."""
    return not isinstance(state.data, (CohortInputError, OSError))


@task(name="collect-patient-ids", retries=2, retry_delay_seconds=[5, 15], retry_condition_fn=_worth_retrying)
async def collect_patient_ids(
    patient_ids: Sequence[str], csv_path: str | None, facility_id: str | None, all_patients: bool
) -> list[str]:
    """The cohort: the list, plus the CSV's ids, plus (when asked) every patient of the facility."""
    ids = list(patient_ids)
    if csv_path:
        ids += read_patient_ids_csv(Path(csv_path).read_text(encoding="utf-8-sig"))
    if all_patients:
        from metriport_flows.client.api import MedicalApi
        from metriport_flows.settings import get_settings

        async with MedicalApi.from_settings(get_settings()) as api:
            ids += [patient.id async for patient in api.iter_patients(facility_id)]
    return check_patient_ids(unique(ids))


async def _start_one(client: PrefectClient, deployment: str, parameters: dict[str, Any], key: str) -> FlowRun:
    async for attempt in _retrying():
        with attempt:
            return await arun_deployment(
                deployment,
                client=client,
                parameters=parameters,
                timeout=0,
                as_subflow=False,
                idempotency_key=key,
                tags=["cohort"],
            )
    raise AssertionError("unreachable: tenacity reraises")


@task(name="start-patient-runs")
async def start_patient_runs(
    cohort_run_id: str,
    parameters_by_patient: dict[str, dict[str, Any]],
    create_interval_seconds: float,
    deployment: str = PATIENT_RECORDS_DEPLOYMENT,
) -> tuple[list[PatientRun], list[str]]:
    """One top-level run per patient, created one at a time; (runs, patient ids that could not start)."""
    logger = get_run_logger()
    runs: list[PatientRun] = []
    not_started: list[str] = []
    async with prefect_client() as client:
        for n, (patient_id, parameters) in enumerate(parameters_by_patient.items(), 1):
            try:
                run = await _start_one(client, deployment, parameters, f"cohort:{cohort_run_id}:{patient_id}")
            except (httpx.HTTPError, ValueError) as exc:
                logger.warning("patient %s: run not created (%s)", patient_id, type(exc).__name__)
                not_started.append(patient_id)
            else:
                runs.append(PatientRun(patient_id=patient_id, flow_run_id=str(run.id)))
            if n % 10 == 0 or n == len(parameters_by_patient):
                logger.info("created %d of %d runs (%d not started)", len(runs), n, len(not_started))
            await asyncio.sleep(create_interval_seconds)
    return runs, not_started


async def read_runs(client: PrefectClient, ids: Sequence[str], final_only: bool = False) -> list[FlowRun]:
    """The runs with these ids (only those in a final state when `final_only`), in batches."""
    state = FlowRunFilterState(type=FlowRunFilterStateType(any_=[*FINAL_TYPES])) if final_only else None
    found: list[FlowRun] = []
    for start in range(0, len(ids), READ_BATCH):
        batch = [UUID(i) for i in ids[start : start + READ_BATCH]]
        async for attempt in _retrying():
            with attempt:
                found += await client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=batch), state=state), limit=len(batch)
                )
    return found


@task(name="follow-patient-runs")
async def follow_patient_runs(runs: list[PatientRun], follow_seconds: float, poll_seconds: float) -> list[PatientRun]:
    """Poll the runs until all are final or `follow_seconds` pass; each run with its last status. A poll
    reads only the runs that ended since the last one, so it costs what changed, not the cohort's size
    (the server serializes every run it returns); the runs still waiting at the end are read once."""
    logger = get_run_logger()
    by_id = {run.flow_run_id: run.model_copy() for run in runs}
    waiting = set(by_id)
    deadline = time.monotonic() + follow_seconds
    last: Counter[str] = Counter()

    def record(flow_run: FlowRun) -> None:
        entry = by_id[str(flow_run.id)]
        entry.status = run_status(flow_run)
        entry.state_name = flow_run.state.name if flow_run.state else None

    async with prefect_client() as client:
        while True:
            for flow_run in await read_runs(client, sorted(waiting), final_only=True):
                record(flow_run)
                waiting.discard(str(flow_run.id))
            if (counts := Counter(run.status for run in by_id.values())) != last:
                logger.info("%d runs: %s", len(by_id), ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
                last = counts
            if not waiting or time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(poll_seconds, max(0.0, deadline - time.monotonic())))
        for flow_run in await read_runs(client, sorted(waiting)):
            record(flow_run)
    return list(by_id.values())
