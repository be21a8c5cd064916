"""patient-records: one patient's medical records out of Metriport, driven by its webhooks.

Start the document query → wait until the documents are downloaded and converted → start the
consolidated query → wait for the consolidated-data webhook (the dispatcher stores the bundle) → check
the stored bundle → publish an artifact → return a `PatientRecordsResult`. Each wait watches its row
in-process for a short hot window, then suspends holding no worker until the dispatcher resumes it.
A resumed run re-runs this function from the top: the start calls are cached tasks, the waits find
their stored resolutions. A bundle URL that expired is re-requested once (attempt 2, a new pause key).
Failures (documents or consolidated failed, hard deadline passed, URL expired twice, bad bundle) raise
a `RecordsError`, so the run ends Failed with that message; an empty bundle ends Completed.

Parameters: one `PatientRecordsParams` named `request` (the UI's form), e.g.
`prefect deployment run patient-records/on-demand -p request='{"patient_id": "<id>"}'`.

Requires: a deployment (suspend needs one), PREFECT_API_URL, METRIPORT_BASE_URL, METRIPORT_API_KEY,
DATABASE_URL (the inbox and waits), BUNDLE_DIR, a running receiver + dispatcher; optional
HOT_WINDOW_SECONDS, SOFT_DEADLINE_SECONDS, HARD_DEADLINE_SECONDS.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

from prefect import flow
from prefect.runtime import flow_run

from metriport_flows.client.errors import NotFound
from metriport_flows.domain.patient_records import (
    MAX_CONSOLIDATED_ATTEMPTS,
    PatientNotFound,
    PatientRecordsParams,
    PatientRecordsResult,
    check_documents,
    consolidated_next_step,
)
from metriport_flows.domain.stages import ConsolidatedReady, DocumentsReady, Stage
from metriport_flows.settings import get_settings
from metriport_flows.store.store import get_store
from tasks.bundles import check_stored_bundle, publish_records_artifact
from tasks.metriport import start_consolidated_query, start_document_query
from tasks.waits import StageWait, stage_seconds


def patient_run_name() -> str:
    """`patient-records · <patient id>`: the runs list says whose records each run fetches (ids only)."""
    request = flow_run.get_parameters().get("request")
    patient_id = request.patient_id if isinstance(request, PatientRecordsParams) else (request or {}).get("patient_id")
    return f"patient-records · {patient_id}"


@asynccontextmanager
async def closed_if_patient_unknown(wait: StageWait) -> AsyncIterator[None]:
    """A start call Metriport answers 404 ends the run with a plain message and closes its wait."""
    try:
        yield
    except NotFound:
        error = PatientNotFound(wait.patient_id or "")
        wait.abandon(str(error))
        raise error from None


@flow(name="patient-records", persist_result=True, flow_run_name=patient_run_name)
async def patient_records(request: PatientRecordsParams) -> PatientRecordsResult:
    """One patient's records: documents, then the consolidated FHIR bundle."""
    store = get_store()
    run_id = str(flow_run.get_id())
    deadlines = request.deadlines(get_settings())
    patient_id = request.patient_id

    documents_wait = StageWait(store, run_id, patient_id, Stage.documents, 1, deadlines)
    documents_wait.register()
    async with closed_if_patient_unknown(documents_wait):
        documents_wait.set_request_id(
            await start_document_query(run_id, patient_id, request.facility_id, request.override, Stage.documents, 1)
        )
    documents = cast(DocumentsReady, await documents_wait.result())
    check_documents(documents, patient_id)

    for attempt in range(1, MAX_CONSOLIDATED_ATTEMPTS + 1):
        consolidated_wait = StageWait(store, run_id, patient_id, Stage.consolidated, attempt, deadlines)
        consolidated_wait.register()
        async with closed_if_patient_unknown(consolidated_wait):
            consolidated_wait.set_request_id(
                await start_consolidated_query(
                    run_id,
                    patient_id,
                    request.conversion_type,
                    list(request.resources),
                    request.date_from,
                    request.date_to,
                    Stage.consolidated,
                    attempt,
                )
            )
        consolidated = cast(ConsolidatedReady, await consolidated_wait.result())
        if consolidated_next_step(consolidated, attempt, patient_id) == "done":
            break

    bundle = check_stored_bundle(consolidated, request.conversion_type)
    result = PatientRecordsResult(
        patient_id=patient_id,
        flow_run_id=run_id,
        conversion_type=request.conversion_type,
        documents_request_id=documents.request_id or documents_wait.request_id,
        consolidated_request_id=consolidated.request_id or consolidated_wait.request_id,
        consolidated_attempts=attempt,
        documents=documents.documents,
        converted=documents.converted,
        empty=consolidated.empty,
        bundle=bundle,
        stage_seconds=stage_seconds(store.waits_for_run(run_id)),
    )
    await publish_records_artifact(result)
    return result
