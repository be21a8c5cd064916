"""bulk-document-download: parameters (plain), then end to end on the session stack: the dispatcher fetches
every document while the 10-minute URLs are valid and resumes the suspended run with the manifest; the
single-document mode fetches through GET /document/download-url."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import StateType
from pydantic import ValidationError

from metriport_devtools.stack import LocalStack
from metriport_flows.domain.bulk_documents import read_manifest
from metriport_flows.domain.document_download import BulkDocumentDownloadParams
from metriport_flows.domain.stages import Outcome, Stage
from metriport_flows.settings import Settings
from metriport_flows.store import Store
from tests.fixtures.patients import (
    artifacts_of,
    create_facility,
    emulator_settings,
    new_patient,
    quiet_document_query,
    state_names,
)
from tests.fixtures.stack import run_deployment_on, wait_for_final_state

DEPLOYMENT = "bulk-document-download/on-demand"


def test_parameters_take_ids_only_and_default_their_deadlines_from_settings():
    params = BulkDocumentDownloadParams(patient_id="0195-abc", hot_window_seconds=0)
    deadlines = params.deadlines(Settings(soft_deadline_seconds=50, hard_deadline_seconds=20, _env_file=None))
    assert (deadlines.hot_window_seconds, deadlines.soft_seconds, deadlines.hard_seconds) == (0, 50, 50)
    for bad in (
        {"patient_id": "Jane Smith"},
        {"patient_id": "p", "document_id": "JaneSmith.xml/../x"},
        {"patient_id": "p", "conversion_type": "json"},
    ):
        with pytest.raises(ValidationError):
            BulkDocumentDownloadParams.model_validate(bad)


@pytest.fixture(scope="module")
def facility_id(stack_api: httpx.Client, sandbox_control: httpx.Client) -> str:
    return create_facility(stack_api, sandbox_control)


def served_sha256(control: httpx.Client, patient_id: str) -> set[str]:
    return {
        d["sha256"]
        for d in control.get("/downloads").json()
        if d.get("patient_id") == patient_id and d.get("status") == 200
    }


@pytest.mark.e2e
def test_a_suspended_run_is_resumed_with_every_document_stored_intact(
    local_stack: LocalStack,
    stack_api: httpx.Client,
    sandbox_control: httpx.Client,
    stack_prefect: SyncPrefectClient,
    stack_store: Store,
    facility_id: str,
) -> None:
    patient_id = new_patient(stack_api, facility_id, "Jane")
    quiet_document_query(stack_api, patient_id)
    with emulator_settings(sandbox_control, delay=[2, 2]):
        run_id = run_deployment_on(
            local_stack, DEPLOYMENT, {"params": {"patient_id": patient_id, "hot_window_seconds": 0}}
        )
        run = wait_for_final_state(local_stack, run_id, timeout=90)
    assert run.state.type == StateType.COMPLETED, run.state.message
    assert "Suspended" in state_names(stack_prefect, run)
    (wait,) = stack_store.waits_for_run(run_id)
    assert (wait.stage, wait.status, wait.outcome) == (Stage.bulk_download, "consumed", Outcome.ready)
    assert wait.delivered_at is not None and wait.pause_key == "bulk-download-1"
    manifest = read_manifest(wait.result["manifest_path"])
    assert len(manifest.documents) == 7 and all(d.status == "ok" for d in manifest.documents)
    for entry in manifest.documents:
        data = Path(entry.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry.sha256 and len(data) == entry.size
        assert stat.S_IMODE(Path(entry.path).stat().st_mode) == 0o600
    assert {d.sha256 for d in manifest.documents} == served_sha256(sandbox_control, patient_id)
    artifact = artifacts_of(stack_prefect, run_id)["document-download"]
    assert "7 downloaded" in artifact and patient_id in artifact and "Jane" not in artifact


@pytest.mark.e2e
def test_one_document_through_its_own_download_url(
    local_stack: LocalStack,
    stack_api: httpx.Client,
    stack_prefect: SyncPrefectClient,
    facility_id: str,
) -> None:
    patient_id = new_patient(stack_api, facility_id, "Chris")
    quiet_document_query(stack_api, patient_id)
    documents = stack_api.get("/medical/v1/document", params={"patientId": patient_id}).json()["documents"]
    xml = next(d for d in documents if d["content"][0]["attachment"]["contentType"] == "application/xml")
    params = {"patient_id": patient_id, "document_id": xml["id"], "conversion_type": "pdf"}
    run = wait_for_final_state(local_stack, run_deployment_on(local_stack, DEPLOYMENT, {"params": params}), 60)
    assert run.state.type == StateType.COMPLETED, run.state.message
    artifact = artifacts_of(stack_prefect, str(run.id))["document-download"]
    assert f"| {xml['id']} | ok |" in artifact and "1 downloaded" in artifact
    (stored,) = (Path(local_stack.bundle_dir) / patient_id / "documents").glob(f"single-{run.id}/*.pdf")
    assert stored.read_bytes().startswith(b"%PDF")
