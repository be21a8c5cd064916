"""Prefect tasks that start Metriport queries: thin wrappers over the typed client.

A resumed run re-runs its flow from the top, so a start call must never repeat: each task first looks
for the request id stored on its stage attempt's wait (registered before the call) and stores the one
Metriport returns at once, so a re-run on any worker reuses it; on top of that each task persists its
result under a cache key made of a version constant, the flow run id, the stage and the attempt.
Both start calls are safe to retry (Metriport returns the running query's requestId for a duplicate),
so transient errors (429, 5xx, connection) are retried. Each attempt first waits for its time on the
shared schedule of Metriport's rate limits (`tasks/limits.py`), which is why the client's own retries
are off for these two calls.

Requires: METRIPORT_BASE_URL, METRIPORT_API_KEY, DATABASE_URL; a Prefect API for result storage.
"""

from __future__ import annotations

from datetime import date

from prefect import task

from metriport_flows.client.api import MedicalApi, default_retry
from metriport_flows.client.metadata import validate_metadata
from metriport_flows.domain.rate_limits import Operation
from metriport_flows.domain.stages import Stage
from metriport_flows.settings import get_settings
from tasks.limits import call_within_limit
from tasks.once import failed_transiently, keep_request_id, once_per_stage_attempt, stored_request_id


def correlation_metadata(flow_run_id: str, stage: Stage) -> dict[str, str]:
    """What Metriport echoes back in `meta.data`, so the dispatcher can find the wait."""
    return validate_metadata({"flowRunId": flow_run_id, "stage": Stage(stage).value})


# Each attempt of a start call must take its own slot of the rate limit: `call_within_limit` retries.
NO_CLIENT_RETRIES = default_retry(total=0)

_start_task = task(
    persist_result=True,
    cache_key_fn=once_per_stage_attempt,
    retries=3,
    retry_delay_seconds=[2, 10, 30],
    retry_condition_fn=failed_transiently,
)


@_start_task
async def start_document_query(
    flow_run_id: str,
    patient_id: str,
    facility_id: str | None = None,
    override: bool = False,
    stage: Stage = Stage.documents,
    attempt: int = 1,
) -> str | None:
    """POST /document/query; the query's requestId (a running query's, when one was running already)."""
    if stored := await stored_request_id(flow_run_id, stage, attempt):
        return stored
    async with MedicalApi.from_settings(get_settings(), retry=NO_CLIENT_RETRIES) as api:
        progress = await call_within_limit(
            Operation.document_query,
            lambda: api.start_document_query(
                patient_id,
                facility_id=facility_id,
                override=override,
                metadata=correlation_metadata(flow_run_id, stage),
            ),
        )
    await keep_request_id(flow_run_id, stage, attempt, progress.request_id)
    return progress.request_id


@_start_task
async def start_consolidated_query(
    flow_run_id: str,
    patient_id: str,
    conversion_type: str,
    resources: list[str] | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    stage: Stage = Stage.consolidated,
    attempt: int = 1,
) -> str:
    """POST /patient/{id}/consolidated/query; the query's requestId."""
    if stored := await stored_request_id(flow_run_id, stage, attempt):
        return stored
    async with MedicalApi.from_settings(get_settings(), retry=NO_CLIENT_RETRIES) as api:
        query = await call_within_limit(
            Operation.consolidated_query,
            lambda: api.start_consolidated_query(
                patient_id,
                conversion_type,
                resources=resources or None,
                date_from=date_from,
                date_to=date_to,
                metadata=correlation_metadata(flow_run_id, stage),
            ),
        )
    await keep_request_id(flow_run_id, stage, attempt, query.request_id)
    return query.request_id
