"""Every Prefect API call the dispatcher makes, behind a small concurrency bound and retries.

The embedded SQLite Prefect server refuses bursts (HTTP 503, "database is locked") and drops
connections under load (docs/prefect.md §3), so calls are bounded by a semaphore and retried with
backoff on 503 and transport errors; a call that still fails raises, and the caller re-schedules it.
A 503 comes to these retries at once: Prefect 3.9's client would first wait 2 s (then 4, 8...) before
its own retry, where a locked SQLite is free again in milliseconds, and a resume would reach its run
seconds late.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar, cast
from uuid import UUID

import orjson
from prefect._internal.pydantic.v2_schema import create_v2_schema
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import State, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.events import emit_event
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter
from prefect.exceptions import ObjectNotFound
from prefect.input.run_input import RunInput, run_input_subclass_from_type
from prefect.states import Scheduled
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from metriport_flows.client.errors import is_transient
from metriport_flows.domain.stages import StageResult
from metriport_flows.webhook.events import PlannedEvent
from metriport_flows.webhook.prefect_api import prefect_client
from metriport_flows.webhook.protocols import ResumeAnswer, RunSummary, RunView

logger = logging.getLogger(__name__)
T = TypeVar("T")
RUNS_PAGE = 200
# Prefect's answer to a resume of a run whose suspend never saved its input's schema.
SCHEMA_MISSING = "Run input schema not found."


async def _save_missing_schema(client: PrefectClient, run_id: UUID, run_input: StageResult) -> bool:
    """Save the schema a run's suspend saves right after its Suspended state: a run whose process ended
    in between (killed, the server away) is suspended without it, and Prefect refuses every resume of it
    for ever. True when the run is suspended with a keyset and the schema is now there."""
    run = await client.read_flow_run(run_id)
    keyset = run.state.state_details.run_input_keyset if run.state and run.state.is_paused() else None
    if not keyset:
        return False
    model: type[RunInput] = cast(type[RunInput], run_input_subclass_from_type(cast(Any, type(run_input))))
    schema = create_v2_schema(model.__name__, model_base=model)
    await client.create_flow_run_input(run_id, keyset["schema"], orjson.dumps(schema).decode())
    logger.warning("run %s was suspended without its input schema; saved it to resume the run", run_id)
    return True


class PrefectGateway:
    def __init__(self, max_concurrent_calls: int = 4, attempts: int = 6) -> None:
        self._semaphore = asyncio.Semaphore(max_concurrent_calls)
        self._attempts = attempts
        self._client: PrefectClient | None = None

    async def __aenter__(self) -> "PrefectGateway":
        self._client = prefect_client()
        await self._client.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None:
            await self._client.__aexit__(exc_type, exc, tb)
            self._client = None

    async def _call(self, fn: Callable[[PrefectClient], Awaitable[T]]) -> T:
        if self._client is None:
            raise RuntimeError("PrefectGateway used outside `async with`")
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_transient),
            stop=stop_after_attempt(self._attempts),
            wait=wait_random_exponential(multiplier=0.2, max=5),
            reraise=True,
        ):
            with attempt:
                async with self._semaphore:
                    return await fn(self._client)
        raise AssertionError("unreachable: AsyncRetrying reraises")

    @property
    def heartbeat_seconds(self) -> float | None:
        """Prefect's `PREFECT_FLOWS_HEARTBEAT_FREQUENCY` as a run's engine applies it (at least 30 s)."""
        from prefect.settings import get_current_settings

        value = get_current_settings().flows.heartbeat_frequency
        return None if value is None else float(max(value, 30))

    async def read_flow_run(self, flow_run_id: UUID | str) -> RunView | None:
        async def read(client: PrefectClient) -> RunView | None:
            try:
                run = await client.read_flow_run(UUID(str(flow_run_id)))
            except ObjectNotFound:
                return None
            state = run.state
            if state is None:
                return RunView(None, None, None)
            return RunView(state.type.value, state.name, state.state_details.pause_key)

        return await self._call(read)

    async def resume(self, flow_run_id: UUID | str, run_input: StageResult) -> ResumeAnswer:
        """POST /flow_runs/{id}/resume with the result as `run_input`: the server validates it against
        the schema `suspend_flow_run(wait_for_input=Model, key=...)` saved and stores it under that
        pause's keyset, where the resumed run reads it."""

        run_id = UUID(str(flow_run_id))

        async def resume(client: PrefectClient) -> ResumeAnswer:
            answer = await client.resume_flow_run(run_id, run_input=run_input.model_dump(mode="json"))
            reason = getattr(answer.details, "reason", None)
            if reason == SCHEMA_MISSING and await _save_missing_schema(client, run_id, run_input):
                answer = await client.resume_flow_run(run_id, run_input=run_input.model_dump(mode="json"))
                reason = getattr(answer.details, "reason", None)
            return ResumeAnswer(answer.status.value, reason)

        return await self._call(resume)

    def emit(self, planned: PlannedEvent) -> None:
        """Queue the event on Prefect's background events worker (never blocks the dispatcher)."""
        emit_event(
            event=planned.event,
            resource=planned.resource,
            related=planned.related or None,
            payload=planned.payload,
            id=planned.id,
        )

    async def runs_in_state(
        self, state_type: str, flow_names: Collection[str], expected_after: datetime
    ) -> list[RunSummary]:
        """Runs of the flows `flow_names` now in `state_type`, expected to start after `expected_after`
        (at most `RUNS_PAGE`, the longest in that state first)."""
        run_filter = FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(state_type)])),
            expected_start_time=FlowRunFilterExpectedStartTime.model_validate({"after_": expected_after}),
        )
        flow_filter = FlowFilter(name=FlowFilterName(any_=list(flow_names)))

        async def read(client: PrefectClient) -> list[RunSummary]:
            runs = await client.read_flow_runs(
                flow_filter=flow_filter,
                flow_run_filter=run_filter,
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                limit=RUNS_PAGE,
            )
            return [
                RunSummary(str(run.id), state_type, run.state.timestamp, run.state.message)
                if run.state
                else RunSummary(str(run.id), state_type, None)
                for run in runs
            ]

        return await self._call(read)

    async def heartbeating(self, flow_run_ids: Collection[str], since: datetime) -> set[str]:
        """The runs among `flow_run_ids` whose process sent Prefect's `prefect.flow-run.heartbeat` since."""
        if not flow_run_ids:
            return set()
        resources = {f"prefect.flow-run.{run_id}": run_id for run_id in flow_run_ids}
        event_filter = EventFilter(
            occurred=EventOccurredFilter.model_validate({"since": since}),
            event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
            resource=EventResourceFilter(id=list(resources), distinct=True),
        )

        async def read(client: PrefectClient) -> set[str]:
            page = await client.read_events(filter=event_filter, limit=len(resources))
            return {resources[event.resource.id] for event in page.events if event.resource.id in resources}

        return await self._call(read)

    async def set_state(self, flow_run_id: str, state_type: str, message: str) -> None:
        """Force the run into `state_type` (Crashed, Scheduled for now, Failed) with `message`."""
        kind = StateType(state_type)
        state: State[object] = (
            Scheduled(message=message) if kind == StateType.SCHEDULED else State(type=kind, message=message)
        )

        async def set_state(client: PrefectClient) -> None:
            await client.set_flow_run_state(UUID(flow_run_id), state, force=True)

        await self._call(set_state)
