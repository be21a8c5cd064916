"""`make demo`: the whole system on this machine, seven patients' records, in under three minutes.

Starts a LocalStack under `./.demo` (emulator with its default 0-5 s webhook delays), creates a facility,
the five sandbox seed patients (documents and FHIR data) and two other patients (no documents), starts
one `patient-records/on-demand` run per patient through the deployment, shows each run's stage live
(from Prefect run states and the waits table), then a summary read from each run's typed result; then
refreshes the same patients as a cohort (`cohort-refresh/nightly`, one top-level run per patient, under
Metriport's rate limits) and shows the cohort's report.
The console shows patient ids only, never names (`demo_view.py` draws it).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterId,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import arun_deployment
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_LOCAL_STORAGE_PATH,
    Settings,
    temporary_settings,
)
from rich.console import Console
from rich.live import Live

from metriport_devtools.demo_view import (
    DEFAULT_ROOT,
    DemoPatient,
    cohort_progress,
    cohort_table,
    is_wide,
    live_table,
    print_kept,
    shown_path,
    summary_table,
)
from metriport_devtools.postgres import admin_url, answers
from metriport_devtools.saved_stack import saved_stack_running
from metriport_devtools.stack import LocalStack
from metriport_flows.client.api import MedicalApi
from metriport_flows.client.models import Demographics
from metriport_flows.domain.cohort import CohortReport
from metriport_flows.domain.patient_records import (
    PATIENT_RECORDS_DEPLOYMENT,
    PATIENT_RECORDS_PARAMETER,
    PatientRecordsResult,
)
from metriport_flows.store.models import Wait, WaitStatus
from metriport_flows.store.store import Store
from metriport_sandbox.seed import SEED_PATIENTS

COHORT_DEPLOYMENT = "cohort-refresh/nightly"
RUNS_TIMEOUT_SECONDS = 150.0
DEMO_FACILITY = {
    "name": "Demo Clinic",
    "npi": "1234567893",  # a test NPI that passes the check-digit test
    "address": {"addressLine1": "1 Main St", "city": "Springfield", "state": "IL", "zip": "62701", "country": "USA"},
}
# Two people the sandbox does not know: Metriport finds no documents for them (and sends no conversion message).
OTHER_PATIENTS: tuple[dict[str, Any], ...] = (
    {
        "firstName": "Robin",
        "lastName": "Demo",
        "dob": "1980-07-04",
        "genderAtBirth": "F",
        "address": [{"addressLine1": "2 Elm St", "city": "Madison", "state": "WI", "zip": "53703"}],
    },
    {
        "firstName": "Casey",
        "lastName": "Demo",
        "dob": "1971-11-30",
        "genderAtBirth": "M",
        "address": [{"addressLine1": "3 Oak Ave", "city": "Austin", "state": "TX", "zip": "73301"}],
    },
)
FINAL_STAGES = {"done", "failed"}


def stage_of(state_type: StateType | None, state_name: str | None, waits: list[Wait]) -> str:
    """The patient's stage for the live view, from the run's state and its rows in the waits table."""
    if state_type == StateType.COMPLETED:
        return "done"
    if state_type in (StateType.FAILED, StateType.CRASHED, StateType.CANCELLED):
        return "failed"
    suspended = " (suspended)" if state_type == StateType.PAUSED else ""
    if state_name == "Resuming":
        suspended = " (resuming)"
    if not waits:
        return "starting"
    latest = max(waits, key=lambda w: (w.created_at, w.attempt))
    if latest.stage == "documents":
        return "waiting for documents" + suspended
    if latest.status == WaitStatus.open:
        return "waiting for consolidated data" + suspended
    return "checking the bundle"


def demographics_for(seed_keys: list[str], others: int) -> list[tuple[str, Demographics]]:
    chosen = [("seed", Demographics.model_validate(SEED_PATIENTS[key].demographics())) for key in seed_keys]
    chosen += [("no documents", Demographics.model_validate(body)) for body in OTHER_PATIENTS[:others]]
    return chosen


async def create_patients(stack: LocalStack, seed_keys: list[str], others: int) -> list[DemoPatient]:
    async with MedicalApi.from_settings(stack.settings()) as api:
        facility = await api.create_facility(DEMO_FACILITY)
        patients = []
        for kind, demographics in demographics_for(seed_keys, others):
            patient = await api.create_patient(facility.id, demographics)
            patients.append(DemoPatient(kind=kind, patient_id=patient.id))
    return patients


async def start_runs(client: PrefectClient, patients: list[DemoPatient]) -> None:
    for patient in patients:
        run = await arun_deployment(
            PATIENT_RECORDS_DEPLOYMENT,
            client=client,
            timeout=0,
            as_subflow=False,
            parameters={PATIENT_RECORDS_PARAMETER: {"patient_id": patient.patient_id}},
        )
        patient.flow_run_id = str(run.id)
        patient.started = time.monotonic()


async def refresh(client: PrefectClient, store: Store, patients: list[DemoPatient]) -> None:
    """One look at every unfinished run: its state, its waits; read the typed result when it ends."""
    pending = {p.flow_run_id: p for p in patients if p.stage not in FINAL_STAGES}
    if not pending:
        return
    runs = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(run_id) for run_id in pending]))
    )
    for run in runs:
        patient = pending[str(run.id)]
        state = run.state
        patient.stage = stage_of(
            state.type if state else None, state.name if state else None, store.waits_for_run(patient.flow_run_id)
        )
        if patient.stage in FINAL_STAGES:
            patient.finished = time.monotonic()
            await read_outcome(run, patient)


async def read_outcome(run: FlowRun, patient: DemoPatient) -> None:
    if run.state is None:
        return
    if run.state.type != StateType.COMPLETED:
        patient.error = run.state.message or run.state.name
        return
    result = await run.state.aresult(raise_on_failure=False)
    patient.result = PatientRecordsResult.model_validate(result)


async def follow_runs(stack: LocalStack, patients: list[DemoPatient], console: Console, timeout: float) -> None:
    store = Store(stack.database_url)
    began = time.monotonic()
    with _bound_to(stack):
        async with PrefectClient(api=stack.prefect_api_url) as client:
            await start_runs(client, patients)
            wide = is_wide(console)
            with Live(live_table(patients, 0, wide), console=console, refresh_per_second=4) as live:
                while any(p.stage not in FINAL_STAGES for p in patients) and time.monotonic() - began < timeout:
                    await refresh(client, store, patients)
                    live.update(live_table(patients, time.monotonic() - began, wide))
                    await asyncio.sleep(0.5)
                live.update(live_table(patients, time.monotonic() - began, wide))
    store.dispose()


def _bound_to(stack: LocalStack) -> AbstractContextManager[Settings]:
    """Prefect settings of the stack's server, and its result storage (the flows persist results there)."""
    return temporary_settings(
        updates={PREFECT_API_URL: stack.prefect_api_url, PREFECT_LOCAL_STORAGE_PATH: stack.prefect_home / "storage"}
    )


async def cohort_stages(client: PrefectClient, store: Store, since: datetime) -> list[str]:
    """The stage of every patient-records run the cohort started (tagged `cohort`, created since `since`)."""
    runs = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=["cohort"]),
            # Prefect types the bound as its own DateTime; an aware datetime is what it compares.
            expected_start_time=FlowRunFilterExpectedStartTime(after_=cast(Any, since)),
        )
    )
    return [
        stage_of(
            run.state.type if run.state else None,
            run.state.name if run.state else None,
            store.waits_for_run(str(run.id)),
        )
        for run in runs
    ]


async def refresh_cohort(
    stack: LocalStack, patients: list[DemoPatient], console: Console, timeout: float
) -> CohortReport | None:
    """The same patients again as a nightly cohort would: one run per patient, followed, reported."""
    parameters = {
        "params": {"patient_ids": [p.patient_id for p in patients], "poll_seconds": 1.0, "follow_minutes": timeout / 60}
    }
    began = time.monotonic()
    since = datetime.now(UTC) - timedelta(seconds=1)
    store = Store(stack.database_url)
    with _bound_to(stack):
        async with PrefectClient(api=stack.prefect_api_url) as client:
            run = await arun_deployment(
                COHORT_DEPLOYMENT, client=client, timeout=0, as_subflow=False, parameters=parameters
            )
            label = f"cohort-refresh run {str(run.id)[:8]}: {len(patients)} patient-records runs"
            with Live(cohort_progress(label, [], len(patients), 0), console=console, refresh_per_second=4) as live:
                while time.monotonic() - began < timeout + 30:
                    run = await client.read_flow_run(run.id)
                    stages = await cohort_stages(client, store, since)
                    live.update(cohort_progress(label, stages, len(patients), time.monotonic() - began))
                    if run.state is not None and run.state.is_final():
                        break
                    await asyncio.sleep(1.0)
            store.dispose()
            if run.state is None or not run.state.is_final():
                console.print(f"[red]cohort-refresh did not finish within {timeout:.0f} s[/]")
                return None
            if not run.state.is_completed():
                console.print(f"[red]cohort-refresh ended {run.state.name}: {run.state.message}[/]")
                return None
            report = CohortReport.model_validate(await run.state.aresult())
    console.print(f"cohort-refresh finished in {time.monotonic() - began:.1f} s (artifact `cohort-refresh`)")
    return report


def prepare_root(root: Path) -> None:
    """A fresh folder per demo; refuse while a kept demo still runs there."""
    if saved_stack_running(root):
        raise SystemExit(f"a demo stack is still running under {root}: stop it with `metriport-dev demo --stop`")
    if root.exists():
        shutil.rmtree(root)


def run_demo(
    console: Console,
    *,
    root: Path = DEFAULT_ROOT,
    keep: bool = False,
    seed_keys: list[str] | None = None,
    others: int = 2,
    hot_window_seconds: float = 30.0,
    delay: tuple[float, float] = (0.0, 5.0),
    cohort: bool = True,
    scale_out: bool = False,
) -> tuple[list[DemoPatient], CohortReport | None]:
    """The patients' rows and, with `cohort`, the cohort refresh's report (None when it did not finish)."""
    began = time.monotonic()
    report = None
    prepare_root(root)
    if scale_out and not answers(admin_url()):
        console.print(f"[yellow]PostgreSQL does not answer at {admin_url()}: running the embedded stack instead[/]")
        scale_out = False
    stack = LocalStack(
        root, hot_window_seconds=hot_window_seconds, delay=delay, scale_out=scale_out, paused_schedules=()
    )
    what = "on PostgreSQL, two receivers and two work-pool workers" if scale_out else "and deployments"
    try:
        with console.status(f"Starting Prefect server, emulator, receiver {what}..."):
            stack.start()
        console.print(f"Stack up in {time.monotonic() - began:.1f} s; logs in {shown_path(stack.logs_dir)}")
        patients = asyncio.run(create_patients(stack, list(seed_keys or SEED_PATIENTS), others))
        console.print(f"Created a facility and {len(patients)} patients; starting one run each")
        asyncio.run(follow_runs(stack, patients, console, RUNS_TIMEOUT_SECONDS))
        console.print()
        console.print(summary_table(patients, console.width))
        console.print(f"Bundle files are in {shown_path(stack.bundle_dir)}/<patient id>/")
        if cohort:
            report = asyncio.run(refresh_cohort(stack, patients, console, RUNS_TIMEOUT_SECONDS))
            if report is not None:
                console.print(cohort_table(report))
    finally:
        if keep:
            print_kept(console, stack, root)
        else:
            stack.stop()
            console.print(
                "The stack is stopped (Prefect server, emulator, receiver, deployments). "
                "To explore the Prefect UI afterwards, keep it running: make demo DEMO_ARGS=--keep"
            )
    console.print(f"Demo wall time: {time.monotonic() - began:.1f} s")
    return patients, report
