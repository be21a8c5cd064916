"""The wait logic (hot window, then suspend; the store as the source of truth) against a real store.

Prefect's suspend is replaced by a recording fake passed in: `Suspends` records the (model, key) it was
called with and either raises `Paused` (what a first suspend does: the process ends) or returns the
input a resume delivered (what a suspend whose key already fired does).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from metriport_flows.domain.stages import (
    ConsolidatedReady,
    DocumentsReady,
    Outcome,
    ResolvedBy,
    Stage,
    StageResult,
)
from metriport_flows.domain.waits import MIN_REPLIES, Deadlines
from metriport_flows.store import Store, WaitStatus
from tasks.waits import StageWait, Watched, adopt_run_input, stage_seconds, watch

PATIENT_ID = "0195d964-d166-7226-8912-76934c23c140"


class Paused(Exception):
    """Stands in for Prefect's Pause: the run is suspended and its process exits."""


@dataclass
class Suspends:
    resume_with: StageResult | None = None
    calls: list[tuple[type, str]] = field(default_factory=list)

    async def __call__(self, model: type[StageResult], key: str) -> StageResult:
        self.calls.append((model, key))
        if self.resume_with is None:
            raise Paused(key)
        return self.resume_with


def stage_wait(
    store: Store, stage: Stage = Stage.documents, attempt: int = 1, hot: float = 0.0, run_id: str | None = None
) -> StageWait:
    deadlines = Deadlines(soft_seconds=60, hard_seconds=600, hot_window_seconds=hot)
    return StageWait(store, run_id or str(uuid.uuid4()), PATIENT_ID, stage, attempt, deadlines, poll_seconds=0.02)


def no_fired_keys() -> set[str]:
    return set()


async def test_register_is_idempotent_per_run_stage_and_attempt(store: Store) -> None:
    first = stage_wait(store)
    again = stage_wait(store, run_id=first.flow_run_id)
    retry = stage_wait(store, Stage.consolidated, attempt=2, run_id=first.flow_run_id)
    assert first.register().id == again.register().id
    other = retry.register()
    assert other.id != first.wait.id and other.pause_key == retry.key == "consolidated-2"
    first.set_request_id("dq-1")
    assert store.get_wait(first.wait.id).request_id == "dq-1"
    assert len(store.waits_for_run(first.flow_run_id)) == 2


async def test_a_resolution_already_stored_is_used_without_watching_or_suspending(store: Store) -> None:
    wait = stage_wait(store, hot=30)
    wait.register()
    early = DocumentsReady(
        outcome=Outcome.ready, request_id="dq-1", documents=7, converted=1, resolved_by=ResolvedBy.webhook
    )
    assert store.resolve_wait(wait.wait.id, early)
    suspends = Suspends()
    result = await asyncio.wait_for(wait.result(suspends, no_fired_keys), timeout=5)
    assert result == early and suspends.calls == []
    assert store.get_wait(wait.wait.id).status == WaitStatus.consumed


async def test_a_resolution_during_the_hot_window_is_read_in_process(store: Store) -> None:
    wait = stage_wait(store, Stage.consolidated, hot=30)
    wait.register()
    suspends = Suspends()
    pending = asyncio.create_task(wait.result(suspends, no_fired_keys))
    ready = ConsolidatedReady(outcome=Outcome.ready, empty=True, resolved_by=ResolvedBy.webhook)
    assert store.resolve_wait(wait.wait.id, ready)
    assert await asyncio.wait_for(pending, timeout=5) == ready
    assert suspends.calls == []
    assert store.get_wait(wait.wait.id).status == WaitStatus.consumed


async def test_after_the_hot_window_it_suspends_on_the_stage_attempt_key(store: Store) -> None:
    wait = stage_wait(store, Stage.consolidated, attempt=2, hot=0.1)
    wait.register()
    suspends = Suspends()
    with pytest.raises(Paused):
        await wait.result(suspends, no_fired_keys)
    assert suspends.calls == [(ConsolidatedReady, "consolidated-2")]
    assert store.get_wait(wait.wait.id).status == WaitStatus.open


async def test_after_a_resume_the_store_wins_over_the_run_input(store: Store) -> None:
    wait = stage_wait(store, hot=30)
    wait.register()
    by_webhook = DocumentsReady(outcome=Outcome.ready, documents=7, resolved_by=ResolvedBy.webhook)
    store.resolve_wait(wait.wait.id, by_webhook)
    assert store.mark_wait_delivered(wait.wait.id)
    suspends = Suspends(resume_with=DocumentsReady(outcome=Outcome.timeout))
    result = await wait.result(suspends, lambda: {"documents-1"})
    assert result == by_webhook and suspends.calls == []
    assert store.get_wait(wait.wait.id).status == WaitStatus.consumed


async def test_a_manual_resume_from_the_ui_becomes_the_resolution(store: Store) -> None:
    wait = stage_wait(store, hot=30)
    wait.register()
    typed_in_form = DocumentsReady(outcome=Outcome.timeout, detail="gave up", resolved_by=ResolvedBy.webhook)
    suspends = Suspends(resume_with=typed_in_form)
    result = await asyncio.wait_for(wait.result(suspends, lambda: {"documents-1"}), timeout=5)
    assert suspends.calls == [(DocumentsReady, "documents-1")]
    assert result.outcome == Outcome.timeout and result.detail == "gave up"
    assert result.resolved_by == ResolvedBy.manual
    row = store.get_wait(wait.wait.id)
    assert row.status == WaitStatus.consumed and row.result_model() == result


async def test_a_suspend_that_returns_at_once_is_adopted_when_the_store_is_open(store: Store) -> None:
    wait = stage_wait(store, hot=0)
    wait.register()
    suspends = Suspends(resume_with=DocumentsReady(outcome=Outcome.ready, documents=0))
    result = await wait.result(suspends, no_fired_keys)
    assert result.outcome == Outcome.ready and result.resolved_by == ResolvedBy.manual
    assert store.get_wait(wait.wait.id).status == WaitStatus.consumed


async def test_adopting_input_never_overwrites_a_resolution(store: Store) -> None:
    wait = stage_wait(store)
    row = wait.register()
    store.resolve_wait(row.id, DocumentsReady(outcome=Outcome.failed, resolved_by=ResolvedBy.reconciler))
    adopted = adopt_run_input(store, row, DocumentsReady(outcome=Outcome.ready))
    assert adopted.outcome == Outcome.failed and adopted.resolved_by == ResolvedBy.reconciler


async def test_watch_gives_up_after_its_window(store: Store) -> None:
    wait = stage_wait(store)
    row = wait.register()
    assert await watch(store, row.id, 0.05, poll=0.01) == Watched(None)


@dataclass
class QueuedRuns:
    """Stands in for Prefect's count of runs queued for a slot (Prefect is the edge here; the e2e test
    in tests/flows/test_slots.py asks the real server)."""

    queued: bool
    asked: int = 0

    async def __call__(self) -> bool:
        self.asked += 1
        return self.queued


def give_way_wait(store: Store, hot: float, give_way: float | None) -> StageWait:
    wait = stage_wait(store, hot=hot)
    wait.deadlines = Deadlines(soft_seconds=60, hard_seconds=600, hot_window_seconds=hot, give_way_seconds=give_way)
    wait.register()
    wait.set_request_id("dq-1")
    return wait


async def test_an_unanswered_wait_gives_its_slot_back_when_runs_queue_for_one(store: Store) -> None:
    """This stage's replies came after the window: holding the slot would only delay the resume."""
    replies_took(store, [60.0] * MIN_REPLIES)
    wait = give_way_wait(store, hot=30, give_way=0.1)
    queued = QueuedRuns(queued=True)
    with pytest.raises(Paused):
        await asyncio.wait_for(wait.result(Suspends(), no_fired_keys, queued), timeout=5)
    row = store.get_wait(wait.wait.id)
    assert queued.asked == 1 and row.status == WaitStatus.open
    assert row.suspended_at is not None and (row.suspended_at - row.requested_at).total_seconds() < 5


async def test_with_no_reply_history_a_wait_holds_its_whole_hot_window(store: Store) -> None:
    """A fresh install: nothing says giving way pays, so the wait keeps its slot as without giving way."""
    wait = give_way_wait(store, hot=1.5, give_way=0.1)
    with pytest.raises(Paused):
        await wait.result(Suspends(), no_fired_keys, QueuedRuns(queued=True), lambda: 0.01)
    row = store.get_wait(wait.wait.id)
    assert (row.suspended_at - row.requested_at).total_seconds() >= 1.5


async def test_with_no_run_queued_a_wait_holds_its_whole_hot_window(store: Store) -> None:
    replies_took(store, [60.0] * MIN_REPLIES)
    wait = give_way_wait(store, hot=1.5, give_way=0.1)
    queued = QueuedRuns(queued=False)
    with pytest.raises(Paused):
        await wait.result(Suspends(), no_fired_keys, queued)
    row = store.get_wait(wait.wait.id)
    assert queued.asked >= 1
    assert (row.suspended_at - row.requested_at).total_seconds() >= 1.5


async def test_without_give_way_prefect_is_never_asked(store: Store) -> None:
    wait = give_way_wait(store, hot=0.3, give_way=None)
    queued = QueuedRuns(queued=True)
    with pytest.raises(Paused):
        await wait.result(Suspends(), no_fired_keys, queued)
    assert queued.asked == 0


def replies_took(store: Store, seconds: list[float]) -> None:
    """Earlier waits of the stage that webhooks resolved `seconds` after their start calls."""
    for took in seconds:
        earlier = give_way_wait(store, hot=30, give_way=0.1)
        row = store.get_wait(earlier.wait.id)
        store.resolve_wait(row.id, DocumentsReady(outcome=Outcome.ready, resolved_by=ResolvedBy.webhook))
        with store.session() as session:
            stored = session.get(type(row), row.id)
            stored.requested_at = stored.resolved_at - timedelta(seconds=took)
            session.add(stored)
            session.commit()


@pytest.mark.parametrize(("resume_cost", "low", "high"), [(10.0, 1.85, 5.0), (0.01, 0.1, 1.0)])
async def test_the_wait_holds_while_a_reply_is_nearer_than_a_resume_costs(
    store: Store, resume_cost: float, low: float, high: float
) -> None:
    """Replies of this stage took 1.0 to 1.9 s. When a resume costs 10 s the wait holds its slot until it
    is older than every one of them; when a resume costs next to nothing it gives way at the 0.1 s floor."""
    replies_took(store, [1 + tenth / 10 for tenth in range(10)])
    wait = give_way_wait(store, hot=30, give_way=0.1)
    with pytest.raises(Paused):
        await wait.result(Suspends(), no_fired_keys, QueuedRuns(queued=True), lambda: resume_cost, lambda: 0.0)
    row = store.get_wait(wait.wait.id)
    assert low <= (row.suspended_at - row.requested_at).total_seconds() < high


@pytest.mark.parametrize(("cpu_busy", "low", "high"), [(0.0, 0.1, 1.0), (0.95, 1.85, 5.0)])
async def test_on_a_busy_machine_the_wait_holds_where_an_idle_one_gives_way(
    store: Store, cpu_busy: float, low: float, high: float
) -> None:
    """Replies took 1.0 to 1.9 s and this process started in 0.1 s. On idle CPUs a resume costs that, and
    the wait gives way at the floor; with the CPUs 95 % busy it costs 20 times as much (2 s), more than
    holding on for any of those replies, so the wait holds until it is older than all of them."""
    replies_took(store, [1 + tenth / 10 for tenth in range(10)])
    wait = give_way_wait(store, hot=30, give_way=0.1)
    with pytest.raises(Paused):
        await wait.result(Suspends(), no_fired_keys, QueuedRuns(queued=True), lambda: 0.1, lambda: cpu_busy)
    row = store.get_wait(wait.wait.id)
    assert low <= (row.suspended_at - row.requested_at).total_seconds() < high


async def test_using_a_wait_before_registering_it_is_an_error(store: Store) -> None:
    with pytest.raises(RuntimeError, match="register"):
        await stage_wait(store).result(Suspends(), no_fired_keys)


async def test_stage_seconds_measure_register_to_resolution(store: Store) -> None:
    documents = stage_wait(store)
    documents.register()
    consolidated = stage_wait(store, Stage.consolidated, run_id=documents.flow_run_id)
    consolidated.register()
    store.resolve_wait(documents.wait.id, DocumentsReady(outcome=Outcome.ready))
    timings = stage_seconds(store.waits_for_run(documents.flow_run_id))
    assert list(timings) == ["documents-1"] and timings["documents-1"] >= 0
