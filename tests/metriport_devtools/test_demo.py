"""The demo's pieces on the session's stack: patients created, runs followed to the end, no PHI printed."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from prefect.client.schemas.objects import StateType
from rich.console import Console

from metriport_devtools.demo import create_patients, follow_runs, refresh_cohort, stage_of
from metriport_devtools.demo_view import DemoPatient, cohort_table, summary_table
from metriport_devtools.stack import LocalStack
from metriport_flows.store.models import Wait, WaitStatus
from metriport_sandbox.seed import SEED_DOCUMENTS, SEED_PATIENTS


def _wait(stage: str, status: WaitStatus = WaitStatus.open, attempt: int = 1) -> Wait:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    return Wait(
        flow_run_id="r",
        stage=stage,
        attempt=attempt,
        pause_key=f"{stage}-{attempt}",
        status=status,
        soft_deadline=now,
        hard_deadline=now,
    )


@pytest.mark.parametrize(
    ("state_type", "name", "waits", "expected"),
    [
        (StateType.SCHEDULED, "Scheduled", [], "starting"),
        (StateType.RUNNING, "Running", [], "starting"),
        (StateType.RUNNING, "Running", [_wait("documents")], "waiting for documents"),
        (StateType.PAUSED, "Suspended", [_wait("documents")], "waiting for documents (suspended)"),
        (StateType.SCHEDULED, "Resuming", [_wait("consolidated")], "waiting for consolidated data (resuming)"),
        (StateType.RUNNING, "Running", [_wait("consolidated", WaitStatus.consumed)], "checking the bundle"),
        (StateType.COMPLETED, "Completed", [], "done"),
        (StateType.FAILED, "Failed", [_wait("documents")], "failed"),
        (StateType.CRASHED, "Crashed", [], "failed"),
    ],
)
def test_stage_of(state_type: StateType, name: str, waits: list[Wait], expected: str) -> None:
    assert stage_of(state_type, name, waits) == expected


@pytest.mark.e2e
def test_demo_follows_a_seed_patient_and_one_without_documents_to_the_end(local_stack: LocalStack) -> None:
    patients = asyncio.run(create_patients(local_stack, ["ollie"], 1))
    assert [p.kind for p in patients] == ["seed", "no documents"]
    out = io.StringIO()
    console = Console(file=out, width=200)
    asyncio.run(follow_runs(local_stack, patients, console, timeout=120))
    console.print(summary_table(patients))

    seed, other = patients
    assert seed.stage == other.stage == "done", (seed.error, other.error)
    assert seed.result is not None and seed.result.bundle.total_resources > 0
    assert Path(seed.result.bundle.path).is_file()
    assert other.result is not None and other.result.empty and other.result.bundle.total_resources == 0
    assert (seed.documents, other.documents) == (len(SEED_DOCUMENTS), 0)
    printed = out.getvalue()
    assert Path(seed.result.bundle.path).name in printed
    assert seed.patient_id in printed and other.patient_id in printed
    report = asyncio.run(refresh_cohort(local_stack, patients, console, timeout=120))
    assert report is not None and report.counts() == {"completed": 2, "failed": 0, "waiting": 0, "not_started": 0}
    assert {run.patient_id for run in report.completed} == {seed.patient_id, other.patient_id}
    console.print(cohort_table(report))
    printed = out.getvalue()
    assert "Cohort refresh" in printed and "cohort-refresh finished" in printed
    ollie = SEED_PATIENTS["ollie"]
    for phi in (ollie.first_name, ollie.last_name, ollie.dob, ollie.address.address_line1, "Robin"):
        assert phi not in printed


def test_summary_marks_an_unfinished_patient() -> None:
    out = io.StringIO()
    Console(file=out, width=200).print(
        summary_table([DemoPatient(kind="seed", patient_id="p-1", stage="failed", error="documents failed")])
    )
    assert "failed: documents failed" in out.getvalue()
