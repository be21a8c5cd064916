"""Cohort refresh pieces: which patients, start one patient-records run each, follow them, report.

Runs are created one after another with a pause between them, because the embedded SQLite Prefect
server refuses bursts of creates (prefect-notes.md); each create carries an idempotency key made of the
cohort run and the patient, so a retried cohort never starts a patient twice. Following polls the runs
in batches until every one is final or the follow deadline passes; runs still waiting then (Metriport
can take hours) are reported, not failed. Everything logged or reported is an id or a count.

Requires: a Prefect API; METRIPORT_* settings for "all patients of a facility"; DATABASE_URL for the
per-stage counts.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from prefect import get_run_logger, task
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import arun_deployment
from pydantic import BaseModel, Field
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from metriport_flows.store.models import Wait

PATIENT_RECORDS_DEPLOYMENT = "patient-records/on-demand"
PATIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
ID_COLUMNS = ("patientid", "metriportid", "id")
READ_BATCH = 200
FAILED_TYPES = {StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}


class CohortInputError(ValueError):
    """The cohort's patient list cannot be used (bad CSV, bad id); the message names lines, not values."""


def unique(ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(i.strip() for i in ids if i and i.strip()))


def check_patient_ids(ids: Sequence[str]) -> list[str]:
    bad = [n for n, i in enumerate(ids, 1) if not PATIENT_ID.match(i)]
    if bad:
        raise CohortInputError(f"{len(bad)} patient id(s) are not Metriport ids (positions {bad[:10]})")
    return list(ids)


def read_patient_ids_csv(text: str) -> list[str]:
    """Ids from a CSV: the `patientId` / `metriportId` / `id` column (any case), or a single-column file."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return []
    header = [cell.strip().lower() for cell in rows[0]]
    column = next((header.index(name) for name in ID_COLUMNS if name in header), None)
    if column is None:
        if len(header) != 1:
            raise CohortInputError(f"CSV needs one of the columns {', '.join(ID_COLUMNS)} (any case)")
        column, rows = 0, [[]] + rows  # no header: every line is an id
    ids = []
    for line, row in enumerate(rows[1:], 2):
        if len(row) <= column or not row[column].strip():
            continue
        if not PATIENT_ID.match(row[column].strip()):
            raise CohortInputError(f"line {line}: not a Metriport patient id")
        ids.append(row[column].strip())
    return unique(ids)


def run_status(run: FlowRun) -> str:
    """completed, failed, or waiting (scheduled, running, suspended: not final yet)."""
    state_type = run.state.type if run.state else None
    if state_type == StateType.COMPLETED:
        return "completed"
    if state_type in FAILED_TYPES:
        return "failed"
    return "waiting"


def stage_counts(waits: Iterable[Wait]) -> dict[str, dict[str, int]]:
    """Per stage: how many waits are open, and how the others ended (ready, failed, timeout, expired)."""
    counts: dict[str, Counter[str]] = {}
    for wait in waits:
        counts.setdefault(wait.stage, Counter())[wait.outcome or "open"] += 1
    return {stage: dict(sorted(c.items())) for stage, c in sorted(counts.items())}


class PatientRun(BaseModel):
    patient_id: str
    flow_run_id: str
    status: str = "waiting"
    state_name: str | None = None


class CohortReport(BaseModel):
    """What the cohort did: ids, states and counts only."""

    patients: int = 0
    completed: list[PatientRun] = Field(default_factory=list)
    failed: list[PatientRun] = Field(default_factory=list)
    waiting: list[PatientRun] = Field(default_factory=list)
    not_started: list[str] = Field(default_factory=list, description="Patient ids whose run could not be created")
    stages: dict[str, dict[str, int]] = Field(default_factory=dict)

    @classmethod
    def from_runs(cls, runs: Sequence[PatientRun], not_started: Sequence[str] = ()) -> "CohortReport":
        report = cls(patients=len(runs) + len(not_started), not_started=list(not_started))
        for run in runs:
            getattr(report, run.status).append(run)
        return report

    def counts(self) -> dict[str, int]:
        return {"completed": len(self.completed), "failed": len(self.failed), "waiting": len(self.waiting),
                "not_started": len(self.not_started)}  # fmt: skip

    def markdown(self) -> str:
        c = self.counts()
        lines = [
            f"# Cohort refresh: {self.patients} patient(s)",
            "",
            f"completed **{c['completed']}** · failed **{c['failed']}** · still waiting **{c['waiting']}**"
            f" · not started **{c['not_started']}**",
            "",
            "## Waits by stage",
            "",
            "| stage | " + " | ".join(("open", "ready", "failed", "timeout", "expired")) + " |",
            "|---|---|---|---|---|---|",
        ]
        for stage, by in self.stages.items():
            cells = " | ".join(str(by.get(k, 0)) for k in ("open", "ready", "failed", "timeout", "expired"))
            lines.append(f"| {stage} | {cells} |")
        for title, runs in (("Failed", self.failed), ("Still waiting", self.waiting)):
            if runs:
                lines += ["", f"## {title}", "", "| patient | flow run | state |", "|---|---|---|"]
                lines += [f"| {r.patient_id} | {r.flow_run_id} | {r.state_name or ''} |" for r in runs]
        if self.not_started:
            lines += ["", "## Not started", ""] + [f"- {patient_id}" for patient_id in self.not_started]
        return "\n".join(lines) + "\n"


def _prefect_transient(exc: BaseException) -> bool:
    """503 / connection errors from a busy embedded server: worth another try (prefect-notes.md)."""
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in (429, 502, 503, 504)
    return isinstance(exc, httpx.TransportError)


def _retrying() -> AsyncRetrying:
    return AsyncRetrying(
        retry=retry_if_exception(_prefect_transient),
        wait=wait_exponential_jitter(initial=0.5, max=8),
        stop=stop_after_attempt(6),
        reraise=True,
    )


def _worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
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


async def _start_one(
    client: PrefectClient, deployment: str, parameters: dict[str, Any], key: str
) -> FlowRun:
    async for attempt in _retrying():
        with attempt:
            return await arun_deployment(
                deployment, client=client, parameters=parameters, timeout=0,
                as_subflow=False, idempotency_key=key, tags=["cohort"],
            )  # fmt: skip
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
    async with get_client() as client:
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


async def read_runs(client: PrefectClient, ids: Sequence[str]) -> list[FlowRun]:
    found: list[FlowRun] = []
    for start in range(0, len(ids), READ_BATCH):
        batch = [UUID(i) for i in ids[start : start + READ_BATCH]]
        async for attempt in _retrying():
            with attempt:
                found += await client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=batch)), limit=len(batch)
                )
    return found


@task(name="follow-patient-runs")
async def follow_patient_runs(
    runs: list[PatientRun], follow_seconds: float, poll_seconds: float
) -> list[PatientRun]:
    """Poll the runs until all are final or `follow_seconds` pass; each run with its last status."""
    logger = get_run_logger()
    by_id = {run.flow_run_id: run.model_copy() for run in runs}
    deadline = time.monotonic() + follow_seconds
    last: dict[str, int] = {}
    async with get_client() as client:
        while True:
            for flow_run in await read_runs(client, list(by_id)):
                entry = by_id[str(flow_run.id)]
                entry.status = run_status(flow_run)
                entry.state_name = flow_run.state.name if flow_run.state else None
            counts = dict(Counter(run.status for run in by_id.values()))
            if counts != last:
                logger.info("%d runs: %s", len(by_id), ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
                last = counts
            if not counts.get("waiting") or time.monotonic() >= deadline:
                return list(by_id.values())
            await asyncio.sleep(min(poll_seconds, max(0.0, deadline - time.monotonic())))
