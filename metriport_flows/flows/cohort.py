"""cohort-refresh: refresh the records of many patients, one top-level patient-records run each.

Patients come from a list parameter, a CSV file of ids, or every patient of a facility (the paginated
patient list; with nothing given, every patient of the account). Each gets its own `patient-records`
run (`run_deployment(..., as_subflow=False)`), so each waits, suspends and resumes on its own and shows
up on its own in the UI. Metriport's rate limits hold across all those runs because every start call
takes a slot of a Prefect global concurrency limit (`tasks/limits.py`; `ensure_rate_limits` runs here
first). The flow then follows the runs until they are final or `follow_minutes` pass, and publishes a
cohort artifact: completed, failed, still waiting, and the waits per stage. It fails when a patient's
run failed; runs still waiting are reported, not failed (Metriport may take hours).

Requires: the `patient-records/on-demand` deployment, PREFECT_API_URL, METRIPORT_BASE_URL,
METRIPORT_API_KEY, DATABASE_URL (the waits table). Optional METRIPORT_RATE_* (tasks/limits.py).
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel, Field, model_validator

from metriport_flows.records import ConversionType, PatientRecordsParams
from metriport_flows.store.store import get_store
from metriport_flows.tasks.cohort import (
    CohortReport,
    collect_patient_ids,
    follow_patient_runs,
    stage_counts,
    start_patient_runs,
)
from metriport_flows.tasks.limits import ensure_rate_limits


class CohortParams(BaseModel):
    """Which patients, and how to run them. Ids and paths only."""

    patient_ids: list[str] = Field(default_factory=list, description="Metriport patient ids")
    csv_path: str | None = Field(None, description="A CSV of patient ids (column patientId, metriportId or id)")
    facility_id: str | None = Field(None, description="With all_patients: only this facility's patients")
    all_patients: bool = Field(
        False, description="Add every patient of the facility (or the account); implied when no ids are given"
    )
    conversion_type: ConversionType = Field("json", description="json (FHIR bundle), pdf or html summary")
    override: bool = Field(False, description="Force Metriport to download the documents again")
    hot_window_seconds: float | None = Field(None, ge=0, description="Per-run hot window; default from settings")
    create_interval_seconds: float = Field(
        0.5, ge=0, le=60, description="Pause between run creations (the embedded server refuses bursts)"
    )
    manage_rate_limits: bool = Field(
        True, description="First create/update Metriport's rate limits from METRIPORT_RATE_* (off: managed elsewhere)"
    )
    follow_minutes: float = Field(60.0, ge=0, description="How long to follow the runs before reporting")
    poll_seconds: float = Field(5.0, gt=0, le=300, description="How often to read the runs' states")

    @model_validator(mode="after")
    def _everyone_when_nobody_named(self) -> "CohortParams":
        if not self.patient_ids and not self.csv_path:
            self.all_patients = True
        return self

    def run_parameters(self, patient_id: str) -> dict:
        """Parameters of one patient-records run (validated here, before any run is created)."""
        request = PatientRecordsParams(
            patient_id=patient_id,
            conversion_type=self.conversion_type,
            override=self.override,
            hot_window_seconds=self.hot_window_seconds,
        )
        return {"request": request.model_dump(mode="json", exclude_defaults=True)}


class CohortFailed(RuntimeError):
    """Some patients' runs failed; the artifact lists them."""


@flow(name="cohort-refresh", persist_result=True)
async def cohort_refresh(params: CohortParams = CohortParams()) -> CohortReport:
    """Start one patient-records run per patient, follow them, report."""
    logger = get_run_logger()
    if params.manage_rate_limits:
        await ensure_rate_limits()
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


if __name__ == "__main__":
    cohort_refresh.serve(name="nightly", cron="0 2 * * *")
