"""The chaos run: a cohort refresh on the local stack with Metriport misbehaving and the infrastructure
killed under it; then every patient is accounted for (`chaos_audit.py`).

The emulator's faults are on together: duplicated, reordered and dropped webhooks, 5xx and 429
answers, stuck document queries, consolidated bundle URLs issued already expired. While the runs go,
the receiver (and its dispatcher), the serve process (with every flow-run process it started) and the
Prefect server are SIGKILLed and started again, each when a set share of the patients' runs has ended.
Nothing is helped along: the reconciler runs as the deployment's schedule runs it (and, when asked,
also every few seconds in this process, to keep the small version in `make test` short).
"""

from __future__ import annotations

import asyncio
import logging
import random
import string
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

import httpx
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterExpectedStartTime, FlowRunFilterTags
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import arun_deployment
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    PREFECT_LOCAL_STORAGE_PATH,
    temporary_settings,
)

from metriport_devtools.stack import LocalStack
from metriport_flows.client.api import MedicalApi
from metriport_flows.client.models import Demographics
from metriport_flows.domain.cohort import CohortParams
from metriport_flows.domain.patient_records import PATIENT_RECORDS_PARAMETER
from metriport_flows.domain.rate_limits import RateLimitSettings, rate_limits
from metriport_flows.store.store import Store
from metriport_flows.webhook.reconciler import reconcile_with
from metriport_sandbox.seed import SEED_PATIENTS

logger = logging.getLogger(__name__)

COHORT_DEPLOYMENT = "cohort-refresh/nightly"
FAULTS = "duplicate=0.3,reorder=0.2,drop=0.1,api_5xx=0.05,api_429=0.05,stuck_dq=0.02,url_expired=0.02"
FACILITY = {
    "name": "Chaos Clinic",
    "npi": "1234567893",
    "address": {"addressLine1": "1 Chaos Way", "city": "Austin", "state": "TX", "zip": "78701", "country": "USA"},
}


@dataclass(frozen=True)
class ChaosPlan:
    patients: int = 500
    faults: str = FAULTS
    receiver_kills: int = 3
    serve_kills: int = 1
    server_restarts: int = 1
    soft_deadline_seconds: float = 60.0
    hard_deadline_seconds: float = 180.0
    hot_window_seconds: float | None = None  # None: the stack's
    rate_per_minute: int = 300  # Metriport's limits raised (this run is about faults, not rate limits)
    reconcile_every_seconds: float | None = None  # extra passes in this process; None: the schedule only
    timeout_seconds: float = 3600.0

    def disruptions(self) -> list[tuple[float, str]]:
        """(share of runs ended, what to kill), in order: spread over the run."""
        planned = [((n + 0.5) / self.receiver_kills * 0.8, "receiver") for n in range(self.receiver_kills)]
        planned += [(0.3 + 0.1 * n, "serve") for n in range(self.serve_kills)]
        planned += [(0.55 + 0.1 * n, "prefect-server") for n in range(self.server_restarts)]
        return sorted(planned)


@dataclass
class ChaosPatient:
    patient_id: str
    last_name: str
    dob: str
    flow_run_id: str | None = None
    state_type: str | None = None
    state_name: str | None = None
    message: str | None = None


@dataclass
class ChaosRun:
    """What happened: the patients and their runs, the disruptions done, the timings."""

    plan: ChaosPlan
    patients: list[ChaosPatient] = field(default_factory=list)
    cohort_run_id: str | None = None
    cohort_state: str | None = None
    disruptions_done: list[tuple[float, str]] = field(default_factory=list)
    seconds: float = 0.0
    finished: bool = False


@contextmanager
def bound_to(stack: LocalStack) -> Iterator[None]:
    """This process talks to the stack's Prefect server as the stack's components do."""
    with temporary_settings(
        updates={
            PREFECT_API_URL: stack.prefect_api_url,
            PREFECT_LOCAL_STORAGE_PATH: stack.prefect_home / "storage",
            PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 30,
        }
    ):
        yield


def chaos_demographics(n: int, rng: random.Random) -> tuple[Demographics, str, str]:
    """Patient n: a seed first name (so Metriport has documents), a unique last name and birth date
    (what the PHI scan looks for afterwards)."""
    seed = list(SEED_PATIENTS.values())[n % len(SEED_PATIENTS)]
    last_name = "Chaos" + "".join(rng.choices(string.ascii_lowercase, k=12))
    dob = f"{rng.randint(1931, 1999)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    body = {**seed.demographics(), "lastName": last_name, "dob": dob}
    return Demographics.model_validate(body), last_name, dob


async def setup(stack: LocalStack, plan: ChaosPlan, control: httpx.AsyncClient, store: Store) -> list[ChaosPatient]:
    """Raise Metriport's rate limits (the emulator's and ours), create the patients, turn the faults on."""
    limits = {"documentQuery": plan.rate_per_minute, "consolidatedDataQuery": plan.rate_per_minute * 6}
    limits["patientCreateOrUpdate"] = max(plan.patients * 2, 100)
    (await control.post("/config", json={"rate_limits": limits, "patient_limit": 1_000_000})).raise_for_status()
    ours = RateLimitSettings(document_query=plan.rate_per_minute, consolidated_query=plan.rate_per_minute * 6)
    for limit in rate_limits(ours):
        store.set_rate_limit(limit)
    rng = random.Random(f"chaos:{plan.patients}:{time.time_ns()}")
    patients = []
    async with MedicalApi.from_settings(stack.settings()) as api:
        facility = await api.create_facility(FACILITY)
        for n in range(plan.patients):
            demographics, last_name, dob = chaos_demographics(n, rng)
            created = await api.create_patient(facility.id, demographics)
            patients.append(ChaosPatient(created.id, last_name, dob))
    (await control.post("/faults", json={"spec": plan.faults})).raise_for_status()
    return patients


async def start_cohort(client: PrefectClient, plan: ChaosPlan, patients: list[ChaosPatient]) -> str:
    params = CohortParams(
        patient_ids=[p.patient_id for p in patients],
        hot_window_seconds=plan.hot_window_seconds,
        soft_deadline_seconds=plan.soft_deadline_seconds,
        hard_deadline_seconds=plan.hard_deadline_seconds,
        create_interval_seconds=0.05,
        manage_rate_limits=False,
        follow_minutes=plan.timeout_seconds / 60,
        poll_seconds=5.0,
    )
    parameters = {"params": params.model_dump(mode="json", exclude_defaults=True)}
    run = await arun_deployment(COHORT_DEPLOYMENT, client=client, timeout=0, as_subflow=False, parameters=parameters)
    return str(run.id)


async def patient_runs(client: PrefectClient, since: datetime) -> list[FlowRun]:
    """Every patient-records run a cohort started since `since` (paged: the API answers 200 at most)."""
    run_filter = FlowRunFilter(
        tags=FlowRunFilterTags(all_=["cohort"]),
        expected_start_time=FlowRunFilterExpectedStartTime(after_=cast(Any, since)),
    )
    runs: list[FlowRun] = []
    while True:
        page = await client.read_flow_runs(flow_run_filter=run_filter, offset=len(runs), limit=200)
        runs += page
        if len(page) < 200:
            return runs


def note_states(patients: list[ChaosPatient], runs: list[FlowRun]) -> int:
    """Record each patient's run and state; how many runs are final."""
    by_patient = {p.patient_id: p for p in patients}
    for run in runs:
        patient = by_patient.get(str(run.parameters.get(PATIENT_RECORDS_PARAMETER, {}).get("patient_id")))
        if patient is None:
            continue
        patient.flow_run_id = str(run.id)
        if run.state is not None:
            patient.state_type, patient.state_name = run.state.type.value, run.state.name
            patient.message = run.state.message
    return sum(1 for p in patients if p.state_type in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED"))


def disrupt(stack: LocalStack, name: str) -> None:
    logger.warning("chaos: SIGKILL %s and start it again", name)
    stack.crash(name)
    stack.restart(name)


async def run_chaos(
    stack: LocalStack, plan: ChaosPlan, progress: Callable[[ChaosRun, int], None] | None = None
) -> ChaosRun:
    """Set up, start the cohort, disrupt on schedule, and follow until every patient's run is final."""
    result = ChaosRun(plan)
    began = time.monotonic()
    since = datetime.now(UTC) - timedelta(seconds=1)
    store = Store(stack.database_url)
    due = plan.disruptions()
    last_pass = time.monotonic()
    with bound_to(stack):
        async with (
            httpx.AsyncClient(base_url=f"{stack.emulator_url}/_sandbox", timeout=60) as control,
            PrefectClient(api=stack.prefect_api_url) as client,
        ):
            result.patients = await setup(stack, plan, control, store)
            result.cohort_run_id = await start_cohort(client, plan, result.patients)
            while time.monotonic() - began < plan.timeout_seconds:
                try:
                    ended = note_states(result.patients, await patient_runs(client, since))
                    cohort = await client.read_flow_run(UUID(result.cohort_run_id))
                except (httpx.HTTPError, OSError) as exc:  # the Prefect server is being restarted
                    logger.info("chaos: Prefect API unavailable (%s)", type(exc).__name__)
                    await asyncio.sleep(1.0)
                    continue
                result.cohort_state = cohort.state.name if cohort.state else None
                if progress is not None:
                    progress(result, ended)
                while due and ended >= due[0][0] * plan.patients:
                    share, name = due.pop(0)
                    await asyncio.to_thread(disrupt, stack, name)
                    result.disruptions_done.append((round(time.monotonic() - began, 1), name))
                if ended == plan.patients and not due and cohort.state is not None and cohort.state.is_final():
                    result.finished = True
                    break
                if plan.reconcile_every_seconds and time.monotonic() - last_pass >= plan.reconcile_every_seconds:
                    last_pass = time.monotonic()
                    await reconcile_with(stack.settings(), store)
                await asyncio.sleep(2.0)
    store.dispose()
    result.seconds = round(time.monotonic() - began, 1)
    return result
