"""What makes a Metriport call safe across resumes and retries: the request id stored on the stage
attempt's wait (any worker sees it, whatever Prefect's result storage holds), one cache key per (task,
flow run, stage, attempt), so a resumed run never repeats a start call, and retries only for failures
that can pass."""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import Task
from prefect.client.schemas.objects import State, TaskRun
from prefect.context import TaskRunContext

from metriport_flows.client.errors import UrlExpired, is_transient
from metriport_flows.domain.stages import Stage
from metriport_flows.store.store import get_store

# Bump to make every run call Metriport again instead of reading an old cached result.
CACHE_VERSION = "1"


def once_per_stage_attempt(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """The task's cache key: its name, the flow run, the stage and the attempt, for ever."""
    return (
        f"metriport-v{CACHE_VERSION}-{context.task.name}-{parameters['flow_run_id']}"
        f"-{Stage(parameters['stage']).value}-{parameters['attempt']}"
    )


def failed_transiently(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry rate limits, server and connection errors, and an expired URL (a new call gets a new one);
    any other 4xx will not get better."""
    failure = state.data
    return isinstance(failure, BaseException) and (is_transient(failure) or isinstance(failure, UrlExpired))


async def stored_request_id(flow_run_id: str, stage: Stage, attempt: int) -> str | None:
    """The request id a start call already returned for this stage attempt: a re-run reuses it and never
    calls Metriport again."""
    return await asyncio.to_thread(get_store().stored_request_id, flow_run_id, stage, attempt)


async def keep_request_id(flow_run_id: str, stage: Stage, attempt: int, request_id: str | None) -> None:
    """Store the start call's request id on its stage attempt's wait the moment it is known."""
    if request_id:
        await asyncio.to_thread(get_store().record_request_id, flow_run_id, stage, attempt, request_id)
