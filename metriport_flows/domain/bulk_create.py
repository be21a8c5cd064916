"""The bulk-patient-create process's parameters, its result and its report (ids and counts, never names)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from metriport_flows.domain.bulk_csv import ResultRow
from metriport_flows.domain.waits import WaitTuning


class BulkPatientCreateParams(WaitTuning):
    """The UI's form: a path, not the CSV itself (it holds demographics)."""

    csv_path: str = Field(description="Path of the CSV (Metriport's bulk patient create columns)")
    facility_id: str | None = Field(None, max_length=64, description="Facility; may be omitted with one facility")
    dry_run: bool = Field(False, description="Metriport validates the CSV without creating patients")
    start_cohort: bool = Field(False, description="Then start cohort-refresh for the created patients")


class BulkCreateSummary(BaseModel):
    request_id: str | None
    rows: int
    succeeded: int
    failed: int
    result_path: str | None
    created_patient_ids: list[str] = Field(default_factory=list)
    cohort_flow_run_id: str | None = None


def result_markdown(summary: BulkCreateSummary, failures: list[ResultRow]) -> str:
    lines = [
        f"# Bulk patient create {summary.request_id}",
        "",
        f"rows **{summary.rows}** · created **{summary.succeeded}** · failed **{summary.failed}**",
    ]
    if summary.cohort_flow_run_id:
        lines += ["", f"cohort refresh run: {summary.cohort_flow_run_id}"]
    if failures:
        lines += ["", "## Failed rows", "", "| line | externalId | reason |", "|---|---|---|"]
        lines += [f"| {r.line} | {r.external_id or ''} | {(r.reason or '').replace('|', '/')} |" for r in failures]
    return "\n".join(lines) + "\n"
