"""Helpers for F1's end-to-end tests on the session stack: facilities, fresh patients, emulator settings,
and reading runs, artifacts and logs back from the stack's Prefect server."""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    DeploymentFilter,
    DeploymentFilterName,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import FlowRun
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

FACILITY = {
    "name": "F1 Clinic",
    "npi": "1234567893",
    "address": {"addressLine1": "1 Main St", "city": "Springfield", "state": "IL", "zip": "62701", "country": "USA"},
}


def create_facility(api: httpx.Client, control: httpx.Client) -> str:
    """A new facility (and room for many patients: the sandbox allows 20 by default)."""
    control.post("/config", json={"patient_limit": 1000}).raise_for_status()
    response = api.post("/medical/v1/facility", json=FACILITY)
    response.raise_for_status()
    return response.json()["id"]


def letters(k: int = 10) -> str:
    return "".join(random.choices(string.ascii_lowercase, k=k))


def new_patient(api: httpx.Client, facility_id: str, first_name: str = "Robin") -> str:
    """A fresh patient (unique last name); a seed first name (Jane, Chris, ...) gets the 7 seed documents."""
    body = {
        "firstName": first_name,
        "lastName": "F" + letters(),
        "dob": "1981-03-04",
        "genderAtBirth": "M",
        "address": [
            {"addressLine1": "9 Test Rd", "city": "Springfield", "state": "IL", "zip": "62701", "country": "USA"}
        ],
    }
    response = api.post("/medical/v1/patient", params={"facilityId": facility_id}, json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def quiet_document_query(api: httpx.Client, patient_id: str, timeout: float = 30.0) -> None:
    """Give a patient its documents without any webhook (Metriport's `disableWHFlag`), so no stray message
    reaches the receiver; returns once the query finished."""
    response = api.post(
        "/medical/v1/document/query", params={"patientId": patient_id}, json={"metadata": {"disableWHFlag": "true"}}
    )
    response.raise_for_status()

    def processing() -> bool:
        progress = api.get("/medical/v1/document/query", params={"patientId": patient_id}).json()
        return any((progress.get(k) or {}).get("status") == "processing" for k in ("download", "convert"))

    Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(0.25), retry=retry_if_result(bool), reraise=True)(
        processing
    )
    assert not processing()


@contextmanager
def emulator_settings(control: httpx.Client, **config: Any) -> Iterator[None]:
    """Change the emulator's config (delay, rate limits, ...) for the block, then restore the stack's."""
    before = control.post("/config", json={}).json()
    try:
        control.post("/config", json=config).raise_for_status()
        yield
    finally:
        restore = {key: before[key] for key in config if key in before}
        control.post("/config", json=restore).raise_for_status()


def state_names(prefect: SyncPrefectClient, run: FlowRun) -> list[str]:
    return [state.name for state in prefect.read_flow_run_states(run.id)]


def artifacts_of(prefect: SyncPrefectClient, run_id: str) -> dict[str, str]:
    """key -> markdown of the run's artifacts."""
    found = prefect.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    return {artifact.key or "": str(artifact.data) for artifact in found}


def log_text(prefect: SyncPrefectClient, run_ids: list[str]) -> str:
    """Every log line of these runs (read 200 at a time)."""
    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=run_ids))
    lines: list[str] = []
    while batch := prefect.read_logs(log_filter=log_filter, limit=200, offset=len(lines)):
        lines += [log.message for log in batch]
    return "\n".join(lines)


def runs_of(prefect: SyncPrefectClient, deployment: str, **flow_run_filter: Any) -> list[FlowRun]:
    """Runs of `flow/deployment` name (newest first), optionally filtered further."""
    flow, name = deployment.split("/")
    return prefect.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=[flow])),
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name])),
        flow_run_filter=FlowRunFilter(**flow_run_filter) if flow_run_filter else None,
        limit=200,
    )
