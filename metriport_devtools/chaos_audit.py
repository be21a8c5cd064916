"""After the chaos run: every patient accounted for, or the reason they are not, as a table of checks.

Checked: every run final; each completed run's stored bundle is the bytes the emulator served for its
consolidated request (sha256 of the file on disk, of the wait's result and of the emulator's download
record agree); each other run failed for a reason an injected fault explains (a stuck document query →
the hard deadline, while Metriport still says processing; an expired bundle URL); no wait open; no inbox
row pending or claimed; no pause resumed twice (a run has no more `Resuming` states than `Suspended`
ones); one accepted `POST /document/query` per patient; no patient's last name or birth date in
Prefect's database or in any log of the stack.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import PrefectClient

from metriport_devtools.chaos import ChaosPatient, ChaosRun, bound_to
from metriport_devtools.stack import LocalStack
from metriport_flows.client.api import MedicalApi
from metriport_flows.domain.stages import Outcome, Stage
from metriport_flows.store.models import MessageStatus
from metriport_flows.store.store import Store
from metriport_flows.webhook.reconciler import reconcile_with

DRAIN_SECONDS = 120.0


@dataclass
class Audit:
    rows: list[tuple[str, str, bool]] = field(default_factory=list)  # (check, figure, passed)
    problems: list[str] = field(default_factory=list)  # ids and reasons, never PHI

    def check(self, name: str, figure: object, passed: bool) -> None:
        self.rows.append((name, str(figure), passed))

    @property
    def ok(self) -> bool:
        return all(passed for _, _, passed in self.rows)


def unsettled(store: Store, patient_ids: set[str]) -> tuple[int, int]:
    """(open waits, inbox rows pending or claimed) of these patients."""
    waits = sum(1 for w in store.open_waits() if w.patient_id in patient_ids)
    busy = sum(
        1
        for status in (MessageStatus.pending, MessageStatus.claimed)
        for m in store.list_messages(status, limit=100_000)
        if m.patient_id in patient_ids
    )
    return waits, busy


async def drain(stack: LocalStack, store: Store, patient_ids: set[str]) -> tuple[int, int]:
    """Let the dispatcher and a reconcile pass settle what is in flight; then (open waits, busy rows)."""
    deadline = time.monotonic() + DRAIN_SECONDS
    await reconcile_with(stack.settings(), store)
    while any(unsettled(store, patient_ids)) and time.monotonic() < deadline:
        await asyncio.sleep(2.0)
    return unsettled(store, patient_ids)


def stored_bundle(store: Store, patient: ChaosPatient) -> tuple[str | None, str | None, str | None]:
    """(request id, sha256 the wait recorded, sha256 of the file on disk) of the run's ready bundle."""
    waits = [w for w in store.waits_for_run(patient.flow_run_id or "") if w.stage == Stage.consolidated.value]
    ready = [w for w in waits if w.outcome == Outcome.ready.value and w.result]
    if not ready:
        return None, None, None
    result: dict[str, Any] = max(ready, key=lambda w: w.attempt).result or {}
    path = result.get("bundle_path")
    on_disk = hashlib.sha256(Path(path).read_bytes()).hexdigest() if path and Path(path).exists() else None
    return result.get("request_id"), result.get("sha256"), on_disk


def served(downloads: list[dict[str, Any]]) -> dict[str, set[str]]:
    """sha256 of every consolidated file the emulator served whole, by request id."""
    by_request: dict[str, set[str]] = {}
    for d in downloads:
        if d["status"] == 200 and d["sha256"] and d["request_id"] and d["kind"] == "consolidated":
            by_request.setdefault(d["request_id"], set()).add(d["sha256"])
    return by_request


async def explained(api: MedicalApi, patient: ChaosPatient, downloads: list[dict[str, Any]]) -> bool:
    """Whether an injected fault explains how the run ended."""
    message = (patient.message or "").lower()
    if "document query" in message and "hard deadline" in message:
        return (await api.get_document_query(patient.patient_id)).is_processing  # the stuck query
    if "expired" in message:
        return any(d["status"] == 403 and d["patient_id"] == patient.patient_id for d in downloads)
    return False


async def resumed_twice(client: PrefectClient, run_id: str) -> int:
    names = Counter(state.name for state in await client.read_flow_run_states(UUID(run_id)))
    return max(0, names["Resuming"] - names["Suspended"])


def phi_found(stack: LocalStack, patients: list[ChaosPatient]) -> list[str]:
    """Files of Prefect's database and the stack's logs holding any patient's last name or birth date."""
    needles = [p.last_name.encode() for p in patients] + [p.dob.encode() for p in patients]
    pattern = re.compile(b"|".join(re.escape(n) for n in needles))
    files = [*stack.prefect_home.glob("prefect.db*"), *stack.logs_dir.rglob("*")]
    return [str(f.name) for f in files if f.is_file() and pattern.search(f.read_bytes())]


async def audit(stack: LocalStack, run: ChaosRun) -> Audit:
    result = Audit()
    patients = run.patients
    store = Store(stack.database_url)
    with bound_to(stack):
        async with (
            httpx.AsyncClient(base_url=f"{stack.emulator_url}/_sandbox", timeout=60) as control,
            PrefectClient(api=stack.prefect_api_url) as client,
            MedicalApi.from_settings(stack.settings()) as api,
        ):
            open_waits, busy_rows = await drain(stack, store, {p.patient_id for p in patients})
            downloads = (await control.get("/downloads")).json()
            posts = (await control.get("/document-query-posts")).json()
            by_request = served(downloads)
            states = Counter(p.state_type or "no run" for p in patients)
            completed = [p for p in patients if p.state_type == "COMPLETED"]
            bad_bundles = []
            for p in completed:
                request_id, recorded, on_disk = stored_bundle(store, p)
                if not (recorded and recorded == on_disk and recorded in by_request.get(request_id or "", set())):
                    bad_bundles.append(p)
            others = [p for p in patients if p.state_type != "COMPLETED"]
            unexplained = [p for p in others if not await explained(api, p, downloads)]
            double = [p for p in patients if p.flow_run_id and await resumed_twice(client, p.flow_run_id)]
            not_one_query = [p for p in patients if posts.get(p.patient_id, 0) != 1]
    phi = phi_found(stack, patients)
    store.dispose()

    n = len(patients)
    final = sum(states[s] for s in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED"))
    result.check("runs final", f"{final}/{n} ({', '.join(f'{k} {v}' for k, v in sorted(states.items()))})", final == n)
    result.check("cohort-refresh run", run.cohort_state or "-", run.finished)
    result.check(
        "completed: bundle = what the emulator served",
        f"{len(completed) - len(bad_bundles)}/{len(completed)}",
        not bad_bundles,
    )
    result.check(
        "not completed: explained by an injected fault",
        f"{len(others) - len(unexplained)}/{len(others)}",
        not unexplained,
    )
    result.check(
        "accounted for (completed + explained)",
        f"{len(completed) - len(bad_bundles) + len(others) - len(unexplained)}/{n}",
        not bad_bundles and not unexplained and final == n,
    )
    result.check("waits open", open_waits, open_waits == 0)
    result.check("inbox rows pending or claimed", busy_rows, busy_rows == 0)
    result.check("pauses resumed twice", len(double), not double)
    result.check("patients without exactly one POST /document/query", len(not_one_query), not not_one_query)
    result.check("files with a patient's name or birth date (Prefect DB, logs)", len(phi), not phi)
    result.check("wall time", f"{run.seconds:.0f} s", run.finished)
    result.check("patients per minute", f"{n / max(run.seconds, 1) * 60:.1f}", True)
    result.check(
        "disruptions (s after start: what)",
        ", ".join(f"{t:.0f}: {w}" for t, w in run.disruptions_done) or "-",
        len(run.disruptions_done) == len(run.plan.disruptions()),
    )
    result.problems += [f"bundle differs: run {p.flow_run_id}" for p in bad_bundles]
    result.problems += [f"unexplained: run {p.flow_run_id} {p.state_name}: {p.message}" for p in unexplained]
    result.problems += [f"resumed twice: run {p.flow_run_id}" for p in double]
    result.problems += [f"{posts.get(p.patient_id, 0)} document queries: patient {p.patient_id}" for p in not_one_query]
    result.problems += [f"PHI in {name}" for name in phi]
    return result
