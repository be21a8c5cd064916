"""Whether runs queue for a slot, asked from inside a real deployment run on the stack's Prefect server.

The question is asked about once a second while a wait watches its row; the answer must come at once
even when the server is busy, since Prefect's own client sleeps 2 s or more after a 503, and meanwhile the
watching run would not read its row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentCreate
from prefect.client.schemas.objects import State
from prefect.flow_engine import run_flow_async
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Scheduled

from metriport_devtools.stack import LocalStack
from tasks.waits import runs_queued_for_a_slot
from tests.fixtures.busy_prefect import BusyOnce, client_waits_on_503
from tests.fixtures.inbox import serve


@flow(name="slots-wanted-probe")
async def ask_twice() -> list[bool]:
    return [await runs_queued_for_a_slot(), await runs_queued_for_a_slot()]


async def deployment_with_a_queued_run(tag: str) -> tuple[UUID, UUID]:
    """A deployment nobody serves (tagged `tag`, so the count sees only its runs), the run to ask from
    and another run; both due a minute ago. Once the first runs, the other waits for a slot."""
    async with get_client() as client:
        flow_id = await client.create_flow_from_name("slots-wanted-probe")
        deployment = DeploymentCreate(flow_id=flow_id, name=f"probe-{tag}", tags=[tag])
        deployment_id = await client.create_deployment(**deployment.model_dump(exclude_unset=True))
        due: State[None] = Scheduled(scheduled_time=datetime.now(UTC) - timedelta(minutes=1))
        asking = await client.create_flow_run_from_deployment(deployment_id, state=due)
        await client.create_flow_run_from_deployment(deployment_id, state=due.model_copy())
    return deployment_id, asking.id


async def ask_from_a_run(deployment_id: UUID, run_id: UUID) -> list[bool]:
    """Run `ask_twice` as the run `run_id`, in this process, through the server at PREFECT_API_URL
    (its events stream aside: the proxy does not carry websockets)."""
    async with get_client() as client:
        try:
            answers = await run_flow_async(ask_twice, flow_run=await client.read_flow_run(run_id))
        finally:
            await client.delete_deployment(deployment_id)
    assert isinstance(answers, list)
    return answers


@pytest.fixture
def stack_api(local_stack: LocalStack) -> Iterator[str]:
    with temporary_settings({PREFECT_API_URL: local_stack.prefect_api_url}):
        yield local_stack.prefect_api_url


def test_a_busy_server_s_503_is_a_no_at_once_and_the_next_ask_sees_the_queued_run(stack_api: str) -> None:
    deployment_id, run_id = asyncio.run(deployment_with_a_queued_run(f"probe-{uuid4()}"))
    busy = BusyOnce(stack_api, "flow_runs/count")
    with client_waits_on_503() as client_waits, serve(busy.app) as proxy_url:
        with temporary_settings({PREFECT_API_URL: f"{proxy_url}/api"}):
            answers = asyncio.run(ask_from_a_run(deployment_id, run_id))
    assert busy.unavailable == 1 and busy.calls == 2
    assert answers == [False, True]  # busy: hold the slot for now; asked again: a run waits for it
    assert client_waits == []
