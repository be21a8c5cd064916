"""The start tasks' cache keys, correlation metadata and retry condition (no Prefect server needed)."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Failed

from metriport_flows.client.errors import (
    BadRequest,
    InvalidMetadata,
    RateLimited,
    ServerError,
    UrlExpired,
)
from metriport_flows.domain.stages import Stage
from metriport_flows.settings import get_settings
from metriport_flows.store import Store, utcnow
from metriport_flows.store.store import get_store
from tasks.metriport import (
    correlation_metadata,
    start_consolidated_query,
    start_document_query,
)
from tasks.once import CACHE_VERSION, failed_transiently, once_per_stage_attempt

RUN_ID = "5f0c3f0e-2d1b-4c55-9f55-0d1f7c7d7a11"
# What the cache key reads of Prefect's TaskRunContext: the task.
TASK_CONTEXT = cast(Any, SimpleNamespace(task=start_consolidated_query))


def test_cache_key_is_one_per_run_stage_and_attempt() -> None:
    key = once_per_stage_attempt(
        TASK_CONTEXT,
        {
            "flow_run_id": RUN_ID,
            "stage": Stage.consolidated,
            "attempt": 2,
            "patient_id": "p",
            "conversion_type": "json",
        },
    )
    assert key == f"metriport-v{CACHE_VERSION}-{start_consolidated_query.name}-{RUN_ID}-consolidated-2"
    other_attempt = once_per_stage_attempt(TASK_CONTEXT, {"flow_run_id": RUN_ID, "stage": "consolidated", "attempt": 1})
    other_run = once_per_stage_attempt(TASK_CONTEXT, {"flow_run_id": "another", "stage": "consolidated", "attempt": 2})
    assert len({key, other_attempt, other_run}) == 3


def test_start_tasks_persist_their_result_under_that_key() -> None:
    for started in (start_document_query, start_consolidated_query):
        assert started.persist_result is True and started.cache_key_fn is once_per_stage_attempt
        assert started.retries == 3


def test_correlation_metadata_is_valid_metriport_metadata() -> None:
    assert correlation_metadata(RUN_ID, Stage.documents) == {"flowRunId": RUN_ID, "stage": "documents"}
    with pytest.raises(InvalidMetadata):
        correlation_metadata("x" * 501, Stage.documents)


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (RateLimited(429, "Too many", None, None, None), True),
        (ServerError(503, "Unavailable", None, None, None), True),
        (httpx.ConnectError("refused"), True),
        (UrlExpired("AccessDenied", "Request has expired"), True),
        (BadRequest(400, "Missing or invalid parameters", None, None, None), False),
    ],
)
def test_only_transient_errors_are_retried(error: Exception, retried: bool) -> None:
    assert failed_transiently(cast(Any, None), cast(Any, None), Failed(data=error)) is retried


async def test_a_start_task_rerun_with_a_stored_request_id_makes_no_second_post(
    emulator, sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resumed run on a worker that cannot see Prefect's cached result (the task's function itself,
    no cache) finds the request id on its stage attempt's wait and never calls Metriport again."""
    monkeypatch.setenv("DATABASE_URL", sqlite_store.url)
    monkeypatch.setenv("METRIPORT_BASE_URL", emulator.base_url)
    monkeypatch.setenv("METRIPORT_API_KEY", emulator.api_key)
    get_settings.cache_clear()
    get_store.cache_clear()
    try:
        for stage, start, args in (
            (Stage.documents, start_document_query, ("pat-1", None, False)),
            (Stage.consolidated, start_consolidated_query, ("pat-1", "json")),
        ):
            sqlite_store.register_wait(
                flow_run_id=RUN_ID,
                stage=stage,
                attempt=1,
                patient_id="pat-1",
                soft_deadline=utcnow() + timedelta(minutes=10),
                hard_deadline=utcnow() + timedelta(hours=1),
                request_id=f"req-first-{stage.value}",
            )
            with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):  # no Prefect needed
                again = await start.fn(RUN_ID, *args, stage=stage, attempt=1)
            assert again == f"req-first-{stage.value}"
    finally:
        get_settings.cache_clear()
        get_store.cache_clear()
    calls = httpx.get(f"{emulator.base_url}/_sandbox/api-calls").json()
    assert calls.get("documentQuery", 0) == 0 and calls.get("consolidatedDataQuery", 0) == 0
