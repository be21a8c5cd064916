"""No idle slots: a run whose wait is unanswered gives its process slot back to runs queued for one.

On the session stack (the runner serves at most 10 runs at once), twelve patient-records runs start with a
300 s hot window while the emulator holds every document query. Holding their windows, the first ten
would keep the last two from starting for five minutes. Metriport's recent replies took ten minutes, so
holding costs more than a resume: they suspend at the give-way floor (2 s) and the last two start and
ask Metriport too. Released, all twelve complete with one query each.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from uuid import uuid4

import httpx
import pytest
from prefect.client.schemas.objects import StateType
from sqlmodel import col, delete

from metriport_devtools.stack import LocalStack
from metriport_flows.domain.stages import DocumentsReady, Outcome, ResolvedBy, Stage
from metriport_flows.store import Store, Wait, WaitStatus, utcnow
from tests.e2e.test_reconcile_e2e import new_patient, wait_of
from tests.fixtures.sandbox import FACILITY
from tests.fixtures.stack import run_patient_records, until, wait_for_final_state

pytestmark = pytest.mark.e2e

RUNS = 12  # two more than the session stack's runner serves at once
HOT_WINDOW = 300.0


@pytest.fixture
def metriport_was_slow(stack_store: Store) -> Iterator[None]:
    """The documents stage's recent replies took ten minutes each (consumed waits of runs that are gone,
    so the dispatcher and the reconciler pass them by): a wait unanswered now is not answered soon, and
    holding its slot costs more than the resume it needs anyway. Removed afterwards."""
    now = utcnow()
    rows = [
        Wait(
            flow_run_id=f"slow-history-{uuid4()}",
            stage=Stage.documents.value,
            pause_key="slow-history",
            status=WaitStatus.consumed.value,
            requested_at=now - timedelta(minutes=10),
            resolved_at=now,
            consumed_at=now,
            soft_deadline=now,
            hard_deadline=now,
            outcome=Outcome.ready.value,
            result=DocumentsReady(outcome=Outcome.ready, resolved_by=ResolvedBy.webhook).model_dump(mode="json"),
        )
        for _ in range(50)
    ]
    with stack_store.session() as session:
        session.add_all(rows)
        session.commit()
    yield
    with stack_store.session() as session:
        session.execute(delete(Wait).where(col(Wait.pause_key) == "slow-history"))
        session.commit()


def test_runs_queued_for_a_slot_start_while_the_first_ones_wait(
    local_stack: LocalStack,
    stack_api: httpx.Client,
    sandbox_control: httpx.Client,
    stack_store: Store,
    held_document_queries: None,
    metriport_was_slow: None,
) -> None:
    assert local_stack.runner_process_limit < RUNS
    facility_id = stack_api.post("/medical/v1/facility", json=FACILITY).raise_for_status().json()["id"]
    patients = [new_patient(stack_api, facility_id, "Jane") for _ in range(RUNS)]
    runs = [run_patient_records(local_stack, {"patient_id": p, "hot_window_seconds": HOT_WINDOW}) for p in patients]

    asked = until(
        lambda: (
            (waits := [wait_of(stack_store, run, Stage.documents) for run in runs])
            and all(w is not None and w.request_id for w in waits)
            and waits
        ),
        timeout=120,
        what=f"all {RUNS} runs asking Metriport while the queries are held (the first runs gave way)",
    )
    gave_way = [w for w in asked if w.suspended_at is not None]
    assert len(gave_way) >= RUNS - local_stack.runner_process_limit, [w.suspended_at for w in asked]
    holds = [(w.suspended_at - w.requested_at).total_seconds() for w in gave_way]
    assert max(holds) < 60, holds

    sandbox_control.post("/config", json={"hold_document_queries": False}).raise_for_status()
    for run_id in runs:
        run = wait_for_final_state(local_stack, run_id, timeout=180)
        assert run.state is not None and run.state.type == StateType.COMPLETED, (run.state.name, run.state.message)
    posts = sandbox_control.get("/document-query-posts").json()
    assert [posts[p] for p in patients] == [1] * RUNS, "one start call per run, resumes included"
