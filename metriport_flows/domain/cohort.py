"""The cohort refresh's rules: which patients (ids from a list, a CSV), its parameters, its report.

Everything here is an id, a count or a path, never PHI; the report is the cohort run's artifact.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, Field, model_validator

from metriport_flows.domain.ids import is_id
from metriport_flows.domain.patient_records import (
    PATIENT_RECORDS_PARAMETER,
    ConversionType,
    PatientRecordsParams,
)
from metriport_flows.store.models import Wait

ID_COLUMNS = ("patientid", "metriportid", "id")


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
    soft_deadline_seconds: float | None = Field(
        None, gt=0, description="Per-run soft deadline (the reconciler asks Metriport); default from settings"
    )
    hard_deadline_seconds: float | None = Field(
        None, gt=0, description="Per-run hard deadline (a wait ends as timeout); default from settings"
    )
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

    def run_parameters(self, patient_id: str) -> dict[str, Any]:
        """Parameters of one patient-records run (validated here, before any run is created)."""
        request = PatientRecordsParams(
            patient_id=patient_id,
            conversion_type=self.conversion_type,
            override=self.override,
            hot_window_seconds=self.hot_window_seconds,
            soft_deadline_seconds=self.soft_deadline_seconds,
            hard_deadline_seconds=self.hard_deadline_seconds,
        )
        return {PATIENT_RECORDS_PARAMETER: request.model_dump(mode="json", exclude_defaults=True)}


class CohortInputError(ValueError):
    """The cohort's patient list cannot be used (bad CSV, bad id); the message names lines, not values."""


def unique(ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(i.strip() for i in ids if i and i.strip()))


def check_patient_ids(ids: Sequence[str]) -> list[str]:
    bad = [n for n, i in enumerate(ids, 1) if not is_id(i)]
    if bad:
        raise CohortInputError(f"{len(bad)} patient id(s) are not Metriport ids (positions {bad[:10]})")
    return list(ids)


def read_patient_ids_csv(text: str) -> list[str]:
    """Ids from a CSV: the `patientId` / `metriportId` / `id` column (any case), or a single-column file."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return []
    header = [cell.strip().lower() for cell in rows[0]]
    column = next((header.index(name) for name in ID_COLUMNS if name in header), None)
    if column is None:
        if len(header) != 1:
            raise CohortInputError(f"CSV needs one of the columns {', '.join(ID_COLUMNS)} (any case)")
        column, rows = 0, [[]] + rows  # no header: every line is an id
    ids = []
    for line, row in enumerate(rows[1:], 2):
        if len(row) <= column or not row[column].strip():
            continue
        if not is_id(row[column].strip()):
            raise CohortInputError(f"line {line}: not a Metriport patient id")
        ids.append(row[column].strip())
    return unique(ids)


def stage_counts(waits: Iterable[Wait]) -> dict[str, dict[str, int]]:
    """Per stage: how many waits are open, and how the others ended (ready, failed, timeout, expired)."""
    counts: dict[str, Counter[str]] = {}
    for wait in waits:
        counts.setdefault(wait.stage, Counter())[wait.outcome or "open"] += 1
    return {stage: dict(sorted(c.items())) for stage, c in sorted(counts.items())}


class PatientRun(BaseModel):
    patient_id: str
    flow_run_id: str
    status: str = "waiting"
    state_name: str | None = None


class CohortReport(BaseModel):
    """What the cohort did: ids, states and counts only."""

    patients: int = 0
    completed: list[PatientRun] = Field(default_factory=list)
    failed: list[PatientRun] = Field(default_factory=list)
    waiting: list[PatientRun] = Field(default_factory=list)
    not_started: list[str] = Field(default_factory=list, description="Patient ids whose run could not be created")
    stages: dict[str, dict[str, int]] = Field(default_factory=dict)

    @classmethod
    def from_runs(cls, runs: Sequence[PatientRun], not_started: Sequence[str] = ()) -> "CohortReport":
        report = cls(patients=len(runs) + len(not_started), not_started=list(not_started))
        for run in runs:
            getattr(report, run.status).append(run)
        return report

    def counts(self) -> dict[str, int]:
        return {
            "completed": len(self.completed),
            "failed": len(self.failed),
            "waiting": len(self.waiting),
            "not_started": len(self.not_started),
        }

    def markdown(self) -> str:
        c = self.counts()
        lines = [
            f"# Cohort refresh: {self.patients} patient(s)",
            "",
            f"completed **{c['completed']}** · failed **{c['failed']}** · still waiting **{c['waiting']}**"
            f" · not started **{c['not_started']}**",
            "",
            "## Waits by stage",
            "",
            "| stage | " + " | ".join(("open", "ready", "failed", "timeout", "expired")) + " |",
            "|---|---|---|---|---|---|",
        ]
        for stage, by in self.stages.items():
            cells = " | ".join(str(by.get(k, 0)) for k in ("open", "ready", "failed", "timeout", "expired"))
            lines.append(f"| {stage} | {cells} |")
        for title, runs in (("Failed", self.failed), ("Still waiting", self.waiting)):
            if runs:
                lines += ["", f"## {title}", "", "| patient | flow run | state |", "|---|---|---|"]
                lines += [f"| {r.patient_id} | {r.flow_run_id} | {r.state_name or ''} |" for r in runs]
        if self.not_started:
            lines += ["", "## Not started", ""] + [f"- {patient_id}" for patient_id in self.not_started]
        return "\n".join(lines) + "\n"
