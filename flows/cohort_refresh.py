"""cohort-refresh: refresh the records of many patients, one top-level patient-records run each.

Patients come from a list parameter, a CSV file of ids, or every patient of a facility (the paginated
patient list; with nothing given, every patient of the account). Each gets its own `patient-records`
run (`run_deployment(..., as_subflow=False)`), so each waits, suspends and resumes on its own and shows
up on its own in the UI. Metriport's rate limits hold across all those runs because every start call
first reserves its time on one schedule in the store (`tasks/limits.py`; `ensure_rate_limits` writes the
limits there first). The flow then follows the runs until they are final or `follow_minutes` pass, and publishes a
cohort artifact: completed, failed, still waiting, and the waits per stage. It fails when a patient's
run failed; runs still waiting are reported, not failed (Metriport may take hours).

Requires: the `patient-records/on-demand` deployment, PREFECT_API_URL, METRIPORT_BASE_URL,
METRIPORT_API_KEY, DATABASE_URL (the waits table). Optional METRIPORT_RATE_* (tasks/limits.py).
"""

from __future__ import annotations

import asyncio

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact
from prefect.runtime import flow_run

from metriport_flows.domain.cohort import CohortParams, CohortReport, stage_counts
from metriport_flows.store.store import get_store
from tasks.cohort import collect_patient_ids, follow_patient_runs, start_patient_runs
from tasks.limits import ensure_rate_limits


class CohortFailed(RuntimeError):
    """Some patients' runs failed; the artifact lists them."""


@flow(name="cohort-refresh", persist_result=True)
async def cohort_refresh(params: CohortParams = CohortParams()) -> CohortReport:
    """Start one patient-records run per patient, follow them, report."""
    logger = get_run_logger()
    if params.manage_rate_limits:
        await asyncio.to_thread(ensure_rate_limits)
    patient_ids = await collect_patient_ids(
        params.patient_ids, params.csv_path, params.facility_id, params.all_patients
    )
    logger.info("cohort of %d patient(s)", len(patient_ids))
    runs, not_started = await start_patient_runs(
        str(flow_run.get_id()),
        {patient_id: params.run_parameters(patient_id) for patient_id in patient_ids},
        params.create_interval_seconds,
    )
    followed = await follow_patient_runs(runs, params.follow_minutes * 60, params.poll_seconds)
    report = CohortReport.from_runs(followed, not_started)
    store = get_store()
    report.stages = stage_counts(wait for run in followed for wait in store.waits_for_run(run.flow_run_id))
    await acreate_markdown_artifact(
        key="cohort-refresh", markdown=report.markdown(), description="Cohort refresh: ids and counts"
    )
    logger.info("cohort done: %s", report.counts())
    if report.failed or report.not_started:
        raise CohortFailed(f"{len(report.failed)} run(s) failed, {len(report.not_started)} not started")
    return report
