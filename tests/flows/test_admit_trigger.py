"""patient.admit / patient.discharge start a patient-records run through the deployment's event trigger:
emulator control plane → signed webhook → receiver → dispatcher (stores the notification bundle, emits
`metriport.patient.admit`) → Prefect trigger → a run for that patient, created by the automation. The
README's example automation (documents on discharge) is checked here too."""

from __future__ import annotations

from uuid import UUID

import httpx
import pytest
from prefect.automations import Automation
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.events.actions import RunDeployment
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.settings import PREFECT_API_URL, temporary_settings
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from metriport_devtools.stack import LocalStack
from tests.fixtures.patients import create_facility, new_patient, runs_of
from tests.fixtures.stack import wait_for_final_state

pytestmark = pytest.mark.e2e


PATIENT_RECORDS, BULK_DOWNLOAD = "patient-records/on-demand", "bulk-document-download/on-demand"


def documents_on_discharge(deployment_id: UUID) -> Automation:
    """The README's example automation: when a patient is discharged, download all their documents."""
    return Automation(
        name="documents on discharge",
        trigger=EventTrigger(
            expect={"metriport.patient.discharge"},
            match={"prefect.resource.id": "metriport.message.*"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[
            RunDeployment(
                source="selected",
                deployment_id=deployment_id,
                parameters={"params": {"patient_id": "{{ event.resource['metriport.patient-id'] }}"}},
            )
        ],
    )


def runs_for_patient(prefect: SyncPrefectClient, patient_id: str, deployment: str) -> list[FlowRun]:
    parameter = "request" if deployment == PATIENT_RECORDS else "params"
    return [
        run for run in runs_of(prefect, deployment) if run.parameters.get(parameter, {}).get("patient_id") == patient_id
    ]


def wait_for_runs(
    prefect: SyncPrefectClient, patient_id: str, count: int, timeout: float = 60, deployment: str = PATIENT_RECORDS
) -> list[FlowRun]:
    return Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(0.5),
        reraise=True,
        retry=retry_if_result(lambda runs: len(runs) < count),
        retry_error_callback=lambda s: pytest.fail(f"{count} run(s) of {deployment} not created"),
    )(runs_for_patient, prefect, patient_id, deployment)


def test_an_admission_and_a_discharge_each_refresh_that_patients_records(
    local_stack: LocalStack,
    stack_api: httpx.Client,
    sandbox_control: httpx.Client,
    stack_prefect: SyncPrefectClient,
) -> None:
    patient_id = new_patient(stack_api, create_facility(stack_api, sandbox_control), "Ollie")
    assert runs_for_patient(stack_prefect, patient_id, PATIENT_RECORDS) == []
    sent = sandbox_control.post("/notifications", json={"patientId": patient_id, "type": "patient.admit"})
    sent.raise_for_status()
    (admitted,) = wait_for_runs(stack_prefect, patient_id, 1)
    assert admitted.created_by is not None and admitted.created_by.type == "AUTOMATION"
    run = wait_for_final_state(local_stack, str(admitted.id), timeout=90)
    assert run.state.type == StateType.COMPLETED, run.state.message
    notifications = local_stack.bundle_dir / patient_id / "notifications"
    assert (notifications / f"{sent.json()['messageId']}.json").is_file()

    with temporary_settings(updates={PREFECT_API_URL: local_stack.prefect_api_url}):
        automation = documents_on_discharge(stack_prefect.read_deployment_by_name(BULK_DOWNLOAD).id).create()
    try:
        sent = sandbox_control.post("/notifications", json={"patientId": patient_id, "type": "patient.discharge"})
        sent.raise_for_status()
        runs = wait_for_runs(stack_prefect, patient_id, 2)
        discharged = next(r for r in runs if r.id != admitted.id)
        assert wait_for_final_state(local_stack, str(discharged.id), timeout=90).state.type == StateType.COMPLETED
        (download,) = wait_for_runs(stack_prefect, patient_id, 1, deployment=BULK_DOWNLOAD)
        download = wait_for_final_state(local_stack, str(download.id), timeout=90)
        assert download.state.type == StateType.COMPLETED, download.state.message
    finally:
        with temporary_settings(updates={PREFECT_API_URL: local_stack.prefect_api_url}):
            automation.delete()
