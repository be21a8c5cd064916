"""Waiting for Metriport: hot in-process for a short window, then cold (suspended, holding nothing).

A `StageWait` is one stage attempt of one flow run (docs/design.md facts 1, 2 and 8):
  1. `register()` the wait in the store BEFORE the start call (idempotent on (run, stage, attempt), so a
     run that re-runs from the top after a resume finds the same row), `set_request_id()` after it;
  2. `result()` reads the row: resolved already (the dispatcher may have matched an early webhook) →
     done; else, if this stage's pause key already fired (a person resumed the run from the UI form
     and nothing is in the store), record that input as the resolution; else watch the row for the
     hot window; and only then suspend with the stage's `RunInput` model and a pause key unique to the
     stage and attempt. The store's resolution is the source of truth; the flow marks it consumed.

The Prefect parts (reading fired pause keys, suspending) are passed in, so the logic runs against a
real store without a Prefect server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, partial
from typing import Any, cast
from uuid import UUID

import httpx

from metriport_flows.domain.stages import (
    RESULT_MODELS,
    ResolvedBy,
    Stage,
    StageResult,
    pause_key,
)
from metriport_flows.domain.waits import Deadlines, resume_seconds_under_load
from metriport_flows.machine import MachineLoad, process_age_seconds
from metriport_flows.store.models import Wait
from metriport_flows.store.store import Store
from metriport_flows.webhook.prefect_api import prefect_client

POLL_SECONDS = 0.2
ASK_EVERY_SECONDS = 1.0  # how often a watching wait asks Prefect whether runs queue for its slot
# A run due this long was passed over at the runner's (or worker's) last poll, 1 s in this project's
# stacks: it waits for a slot. Younger due runs are still being picked up.
UNPICKED = timedelta(seconds=2)

# (model, pause key) -> the input the run was resumed with; raises Prefect's Pause to end the process.
Suspend = Callable[[type[StageResult], str], Awaitable[StageResult]]
# Whether other runs are due and wait for a process slot that the current run holds.
SlotsWanted = Callable[[], Awaitable[bool]]


async def prefect_suspend(model: type[StageResult], key: str, message: str | None = None) -> StageResult:
    """Suspend the current flow run until it is resumed with `model` input (no Prefect timeout: the
    deadlines are ours). On a re-run where `key` already fired it returns that input at once.

    The steps of Prefect 3.9's `asuspend_flow_run` for the current run, with one addition: the Suspended
    state carries `message` (what the run waits for), which the UI shows as the state message; Prefect's
    own function proposes the state without one."""
    from prefect._flow_run_suspension import mark_flow_run_suspension_requested
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import State
    from prefect.context import FlowRunContext
    from prefect.exceptions import Pause
    from prefect.input.run_input import RunInput, keyset_from_paused_state, run_input_subclass_from_type
    from prefect.states import Suspended
    from prefect.utilities.engine import propose_state

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise RuntimeError("Flow runs can only be suspended from within a flow run.")
    flow_run_id = context.flow_run.id
    run_logger().info("Suspending flow run (%s); the dispatcher resumes it", message or key)
    proposed: State[Any] = Suspended(timeout_seconds=None, pause_key=key, message=message)
    input_model: type[RunInput] = cast(type[RunInput], run_input_subclass_from_type(cast(Any, model)))
    keyset = keyset_from_paused_state(proposed)
    proposed.state_details.run_input_keyset = cast(dict[str, str], keyset)
    async with get_client() as client:
        state = await propose_state(client=client, state=proposed, flow_run_id=flow_run_id)
        if state.is_running():  # this key fired before: the run was resumed, its input is stored
            return cast(StageResult, await input_model.aload(keyset))
        if not state.is_paused():
            raise RuntimeError(f"Flow run cannot be suspended. Received unexpected state from API: {state}")
        await input_model.asave(keyset)
    mark_flow_run_suspension_requested(flow_run_id, state)
    raise Pause(state=state)


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The flow run's logger (its lines show in the UI), or a plain one outside a run."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def fired_pause_keys() -> set[str]:
    """Pause keys that already fired in the current flow run (Prefect keeps them across resumes)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return set()
    return set(context.flow_run.empirical_policy.pause_keys or ())


def stored_wait(store: Store, wait_id: str) -> Wait:
    """The wait's row; a run's own wait is never deleted, so a missing row is a broken store."""
    wait = store.get_wait(wait_id)
    if wait is None:
        raise RuntimeError(f"Wait {wait_id} is missing from the store")
    return wait


async def runs_queued_for_a_slot() -> bool:
    """Whether a run of the current run's kind (its deployment's tags, its work pool) is due and not
    started: it waits for a process slot (the runner's or a worker's limit) that this run holds. False
    outside a deployment run or when Prefect does not answer or is busy (the wait then holds its hot
    window, and asks again a second later: Prefect's own client would sleep 2 s or more after a 503, and
    meanwhile this run would not read its wait's row)."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterNextScheduledStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
        WorkPoolFilter,
        WorkPoolFilterName,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.context import FlowRunContext
    from prefect.exceptions import PrefectHTTPStatusError

    context = FlowRunContext.get()
    run = context.flow_run if context is not None else None
    if run is None or run.deployment_id is None:
        return False
    deployment_id = run.deployment_id
    unpicked = cast(Any, datetime.now(UTC) - UNPICKED)  # Prefect's filter is typed for its own DateTime
    try:
        async with prefect_client() as client:
            if deployment_id not in _deployment_tags:
                _deployment_tags[deployment_id] = (await client.read_deployment(deployment_id)).tags
            tags = _deployment_tags[deployment_id]
            due = FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
                next_scheduled_start_time=FlowRunFilterNextScheduledStartTime(before_=unpicked),
                tags=FlowRunFilterTags(all_=tags) if tags else None,
            )
            pool = WorkPoolFilter(name=WorkPoolFilterName(any_=[run.work_pool_name])) if run.work_pool_name else None
            return await client.count_flow_runs(flow_run_filter=due, work_pool_filter=pool) > 0
    except (httpx.HTTPError, PrefectHTTPStatusError):
        return False


_deployment_tags: dict[UUID, list[str]] = {}  # a run's process asks about one deployment


@cache
def resume_cost_seconds() -> float:
    """What a resume's new process does: start, and re-run the flow to its wait. Estimated (once per
    process) by how long this process took to reach its first wait."""
    return process_age_seconds()


@dataclass
class GiveWay:
    """When a watching wait gives its slot back (docs/design.md fact 8): the stage's recent replies
    against what a resume costs now, its process's work slowed by the machine's current load."""

    deadlines: Deadlines
    replies: list[float]
    start_seconds: float
    cpu_busy: Callable[[], float]
    busy: float = 0.0
    cost: float = 0.0

    def after(self) -> float | None:
        """Seconds after which giving way pays, with the load since the last call; None: hold."""
        self.busy = self.cpu_busy()
        self.cost = resume_seconds_under_load(self.start_seconds, self.busy)
        return self.deadlines.give_way_after(self.replies, self.cost)


@dataclass(frozen=True)
class Watched:
    result: StageResult | None
    gave_way: bool = False  # stopped early: other runs queue for the slot this run holds


async def watch(
    store: Store,
    wait_id: str,
    seconds: float,
    poll: float = POLL_SECONDS,
    *,
    give_way: GiveWay | None = None,
    slots_wanted: SlotsWanted = runs_queued_for_a_slot,
) -> Watched:
    """Poll the wait's row until it is resolved or `seconds` pass. With `give_way`, from its floor on and
    about once a second: once the wait is older than `give_way.after()`, ask whether other runs queue for
    a slot, and stop if they do."""
    started = time.monotonic()
    deadline = started + seconds
    floor = give_way.deadlines.give_way_seconds if give_way else None
    next_ask = None if floor is None else started + floor
    while True:
        result = stored_wait(store, wait_id).result_model()
        now = time.monotonic()
        remaining = deadline - now
        if result is not None or remaining <= 0:
            return Watched(result)
        if give_way is not None and next_ask is not None and now >= next_ask:
            after = give_way.after()
            if after is not None and now - started >= after and await slots_wanted():
                return Watched(None, gave_way=True)
            next_ask = time.monotonic() + ASK_EVERY_SECONDS
        await asyncio.sleep(min(poll, remaining))


def adopt_run_input(store: Store, wait: Wait, run_input: StageResult) -> StageResult:
    """The run was resumed with `run_input` but the store has no resolution: a person resumed it from
    the UI's form. Record it (resolved_by manual) unless someone resolved the wait meanwhile."""
    model = RESULT_MODELS[Stage(wait.stage)]
    manual = model.model_validate({**run_input.model_dump(exclude_unset=False), "resolved_by": ResolvedBy.manual})
    store.resolve_wait(wait.id, manual)
    resolved = stored_wait(store, wait.id).result_model()
    if resolved is None:
        raise RuntimeError(f"Wait {wait.id} is still open after resolving it")
    return resolved


@dataclass
class StageWait:
    """One stage attempt's wait for one flow run."""

    store: Store
    flow_run_id: str
    patient_id: str | None  # None for a bulk job (one wait for many patients)
    stage: Stage
    attempt: int
    deadlines: Deadlines
    poll_seconds: float = POLL_SECONDS
    wait: Wait | None = None
    request_id: str | None = None

    @property
    def key(self) -> str:
        return pause_key(self.stage, self.attempt)

    @property
    def model(self) -> type[StageResult]:
        return RESULT_MODELS[self.stage]

    def register(self, now: datetime | None = None) -> Wait:
        now = now or datetime.now(UTC)
        self.wait = self.store.register_wait(
            flow_run_id=self.flow_run_id,
            stage=self.stage,
            attempt=self.attempt,
            patient_id=self.patient_id,
            soft_deadline=now + timedelta(seconds=self.deadlines.soft_seconds),
            hard_deadline=now + timedelta(seconds=self.deadlines.hard_seconds),
        )
        return self.wait

    def set_request_id(self, request_id: str | None) -> None:
        """Record the Metriport requestId the start call returned (the dispatcher matches on it)."""
        if request_id:
            self.store.set_wait_request_id(self._wait().id, request_id)
            self.request_id = request_id

    def abandon(self, reason: str) -> None:
        """The run ends without this wait (its start call was refused): close it for good."""
        self.store.abandon_wait(self._wait().id, reason)

    def _wait(self) -> Wait:
        if self.wait is None:
            raise RuntimeError("register() the wait before using it")
        return self.wait

    def _consume(self, result: StageResult, how: str) -> StageResult:
        self.store.mark_wait_consumed(self._wait().id)
        run_logger().info(
            "Wait %s ended %s (resolved by %s, read %s)", self.key, result.outcome.value, result.resolved_by.value, how
        )
        return result

    def waiting_for(self) -> str:
        """The Suspended state's message: what the run waits for (ids only)."""
        request = f", request {self.request_id}" if self.request_id else ""
        return f"waiting for Metriport: {self.key}{request}"

    async def result(
        self,
        suspend: Suspend | None = None,
        fired: Callable[[], set[str]] = fired_pause_keys,
        slots_wanted: SlotsWanted = runs_queued_for_a_slot,
        resume_cost: Callable[[], float] = resume_cost_seconds,
        cpu_busy: Callable[[], float] | None = None,
    ) -> StageResult:
        """The stage's resolution: from the store, a fired pause key, the hot window, or a suspend. The
        hot window ends early when other runs queue for the process slot it holds and a resume costs
        less than holding on (docs/design.md); `cpu_busy` (default: this machine's, measured) weighs it."""
        suspend = suspend or partial(prefect_suspend, message=self.waiting_for())
        wait = stored_wait(self.store, self._wait().id)
        stored = wait.result_model()
        if stored is not None:
            return self._consume(stored, "from the store")
        if self.key in fired():
            run_input = await suspend(self.model, self.key)
            return self._consume(adopt_run_input(self.store, wait, run_input), "from the resume input")
        give_way = None
        if self.deadlines.give_way_seconds is not None:
            replies = self.store.recent_reply_seconds(self.stage)
            give_way = GiveWay(self.deadlines, replies, resume_cost(), cpu_busy or MachineLoad())
        watched = await watch(
            self.store,
            wait.id,
            self.deadlines.hot_window_seconds,
            self.poll_seconds,
            give_way=give_way,
            slots_wanted=slots_wanted,
        )
        if watched.result is not None:
            return self._consume(watched.result, "in the hot window")
        if watched.gave_way and give_way is not None:
            run_logger().info(
                "Wait %s: no answer yet, other runs queue for a slot, a resume costs about %.1f s (CPUs %.0f%% busy);"
                " suspending",
                self.key,
                give_way.cost,
                give_way.busy * 100,
            )
        else:
            run_logger().info(
                "Wait %s: no answer within %.1f s; suspending", self.key, self.deadlines.hot_window_seconds
            )
        self.store.mark_wait_suspended(wait.id)
        run_input = await suspend(self.model, self.key)
        stored = stored_wait(self.store, wait.id).result_model()
        if stored is not None:
            return self._consume(stored, "from the store")
        return self._consume(adopt_run_input(self.store, wait, run_input), "from the resume input")


def stage_seconds(waits: list[Wait]) -> dict[str, float]:
    """Seconds from registering each wait to its resolution, keyed `stage-attempt` (survives resumes)."""
    timings: dict[str, float] = {}
    for wait in sorted(waits, key=lambda w: w.created_at):
        if wait.resolved_at is not None:
            timings[pause_key(Stage(wait.stage), wait.attempt)] = round(
                (wait.resolved_at - wait.created_at).total_seconds(), 3
            )
    return timings
