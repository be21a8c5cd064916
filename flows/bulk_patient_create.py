"""bulk-patient-create: load many patients into Metriport from a CSV, then (optionally) refresh them.

The CSV is checked first, the way Metriport's importer reads it (bulk_csv.py): a bad file fails the
run at once with every problem listed by line and column, before anything is uploaded. Then
`POST /patient/bulk` → PUT the CSV to the upload URL → wait for `medical.bulk-patient-create`. Metriport
says `processing` when the upload is taken and `completed` when every patient's document query is done
(minutes to hours); the result CSV URL then lives 3 minutes, so the dispatcher stores the CSV at once
(webhook/handlers/bulk.py) and resolves the wait. The run resumes, reads the stored result, publishes
an artifact (counts; failures as line, externalId and reason, never names) and, when asked, starts
`cohort-refresh` for the created patients. A failed import or a completion that never comes (ended by
the reconciler's hard deadline) fails the run.

Requires: a deployment (the wait suspends), PREFECT_API_URL, METRIPORT_BASE_URL, METRIPORT_API_KEY,
DATABASE_URL, BUNDLE_DIR, a running receiver + dispatcher; `cohort-refresh/nightly` for start_cohort.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact
from prefect.deployments import arun_deployment
from prefect.runtime import flow_run

from metriport_flows.domain.bulk_create import BulkCreateSummary, BulkPatientCreateParams, result_markdown
from metriport_flows.domain.bulk_csv import created_patient_ids, parse_result_csv
from metriport_flows.domain.stages import BulkCreateDone, Outcome, Stage
from metriport_flows.settings import get_settings
from metriport_flows.store.store import get_store
from tasks.bulk import (
    check_bulk_csv,
    start_bulk_patient_create,
    upload_bulk_csv,
)
from tasks.waits import StageWait

COHORT_DEPLOYMENT = "cohort-refresh/nightly"


class BulkCreateFailed(RuntimeError):
    """Metriport failed the import, its result expired, or it never completed (ids only)."""


@flow(name="bulk-patient-create", persist_result=True)
async def bulk_patient_create(params: BulkPatientCreateParams) -> BulkCreateSummary:
    """Validate, start the import, upload, wait for Metriport's result, report."""
    logger = get_run_logger()
    run_id = str(flow_run.get_id())
    csv_path = str(Path(params.csv_path).expanduser().resolve())
    rows = await check_bulk_csv(run_id, csv_path, Stage.bulk_create, 1)
    wait = StageWait(get_store(), run_id, None, Stage.bulk_create, 1, params.deadlines(get_settings()))
    wait.register()
    job = await start_bulk_patient_create(run_id, params.facility_id, params.dry_run, Stage.bulk_create, 1)
    wait.set_request_id(job.request_id)
    await upload_bulk_csv(run_id, job, csv_path, Stage.bulk_create, 1)
    logger.info("bulk import %s: %d row(s) uploaded; waiting for Metriport", job.request_id, rows)
    result = cast(BulkCreateDone, await wait.result())
    if result.outcome != Outcome.ready or not result.result_path:
        raise BulkCreateFailed(f"bulk import {job.request_id} ended {result.outcome.value}: {result.detail or ''}")
    results = parse_result_csv(Path(result.result_path).read_bytes())
    created = created_patient_ids(results)
    summary = BulkCreateSummary(
        request_id=job.request_id,
        rows=len(results),
        succeeded=len(created),
        failed=len(results) - len(created),
        result_path=result.result_path,
        created_patient_ids=created,
    )
    if params.start_cohort and created and not params.dry_run:
        cohort = await arun_deployment(
            COHORT_DEPLOYMENT,
            parameters={"params": {"patient_ids": created}},
            timeout=0,
            as_subflow=False,
            idempotency_key=f"bulk-create:{run_id}",
        )
        summary.cohort_flow_run_id = str(cohort.id)
    failures = [row for row in results if row.status != "succeeded"]
    await acreate_markdown_artifact(
        key="bulk-patient-create", markdown=result_markdown(summary, failures), description="Ids and counts"
    )
    logger.info("bulk import %s: %d created, %d failed", job.request_id, summary.succeeded, summary.failed)
    return summary
