"""The `html` and `pdf` conversions of a consolidated query: a readable medical record summary.

Why: Metriport renders the patient's FHIR bundle into a summary page for conversionType html/pdf
(docs/metriport.md §3.5, §5.1 item 9). The emulator renders the (filtered) resources itself: one table per
resource type, built once by `summary_sections` and written out as HTML (escaped, well formed) or as
a PDF through the shared hand-built writer in `sandbox.pdf`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from html import escape
from typing import Any

from metriport_sandbox.fhir_data import SUPPORTING_TYPES, resource_date
from metriport_sandbox.pdf import pdf_document

TITLE = "Medical Record Summary"


@dataclass
class Section:
    resource_type: str
    title: str
    headers: tuple[str, ...]
    rows: list[tuple[str, ...]]


def _concept(value: Any) -> str:
    if not isinstance(value, Mapping):
        return ""
    if value.get("text"):
        return str(value["text"])
    for coding in value.get("coding") or []:
        if coding.get("display") or coding.get("code"):
            return str(coding.get("display") or coding.get("code"))
    return ""


_SYSTEM_NAMES = {"sct": "SNOMED", "icd-10-cm": "ICD-10", "loinc.org": "LOINC", "rxnorm": "RxNorm", "cvx": "CVX"}


def _codes(value: Any) -> str:
    if not isinstance(value, Mapping):
        return ""
    codes = []
    for coding in value.get("coding") or []:
        system = str(coding.get("system", "")).rstrip("/").rsplit("/", 1)[-1]
        system = _SYSTEM_NAMES.get(system, system)
        if coding.get("code"):
            codes.append(f"{system} {coding['code']}".strip())
    return ", ".join(codes)


def _status(value: Any) -> str:
    return _concept(value) if isinstance(value, Mapping) else str(value or "")


def _quantity(value: Any) -> str:
    if not isinstance(value, Mapping) or "value" not in value:
        return ""
    return f"{value['value']} {value.get('unit', '')}".strip()


def _when(resource: Mapping[str, Any]) -> str:
    day = resource_date(resource)
    return day.isoformat() if day else ""


def _observation_value(obs: Mapping[str, Any]) -> str:
    if "valueQuantity" in obs:
        return _quantity(obs["valueQuantity"])
    if obs.get("component"):
        return " / ".join(_quantity(c.get("valueQuantity")) for c in obs["component"])
    for key in ("valueString", "valueCodeableConcept"):
        if key in obs:
            return _concept(obs[key]) if key.endswith("Concept") else str(obs[key])
    return ""


def _is_lab(obs: Mapping[str, Any]) -> bool:
    return any(c.get("code") == "laboratory" for cat in obs.get("category", []) for c in cat.get("coding", []))


class _Record:
    """The resources indexed by type and by `Type/id`, with the lookups the sections need."""

    def __init__(self, resources: Iterable[Mapping[str, Any]]) -> None:
        self.resources = list(resources)
        self.by_ref = {f"{r.get('resourceType')}/{r.get('id')}": r for r in self.resources}
        self.types = sorted({str(r.get("resourceType")) for r in self.resources if r.get("resourceType")})

    def dated(self, kind: str) -> list[Mapping[str, Any]]:
        """Resources of one type, newest first."""
        return sorted((r for r in self.resources if r.get("resourceType") == kind), key=_when, reverse=True)

    def medication(self, resource: Mapping[str, Any]) -> str:
        if "medicationCodeableConcept" in resource:
            return _concept(resource["medicationCodeableConcept"])
        target = self.by_ref.get(str((resource.get("medicationReference") or {}).get("reference")))
        return _concept(target.get("code")) if target else ""

    def lab_results(self, report: Mapping[str, Any]) -> str:
        observations = [self.by_ref.get(str(x.get("reference"))) for x in report.get("result", [])]
        return "; ".join(f"{_concept(o.get('code'))}: {_observation_value(o)}" for o in observations if o)


def _dosage(items: Any) -> str:
    return "; ".join(str(d.get("text", "")) for d in items or [])


def _reactions(allergy: Mapping[str, Any]) -> str:
    return ", ".join(_concept(m) for x in allergy.get("reaction", []) for m in x.get("manifestation", []))


def _patient_lines(patient: Mapping[str, Any]) -> list[str]:
    name = (patient.get("name") or [{}])[0]
    full = " ".join([*name.get("given", []), name.get("family", "")]).strip()
    address = (patient.get("address") or [{}])[0]
    parts = [*address.get("line", []), address.get("city"), address.get("state"), address.get("postalCode")]
    place = ", ".join(str(p) for p in parts if p)
    born = f"Date of birth: {patient.get('birthDate', '')}    Gender: {patient.get('gender', '')}"
    lines = [f"Patient: {full}", born]
    return lines + ([f"Address: {place}"] if place else [])


def status(resource: Mapping[str, Any]) -> str:
    return str(resource.get("status", ""))


def period(resource: Mapping[str, Any], key: str) -> str:
    return str((resource.get("period") or {}).get(key, ""))


def summary_sections(resources: Iterable[Mapping[str, Any]]) -> tuple[list[str], list[Section]]:
    """The patient header lines and one section per resource type present, in clinical order."""
    rec = _Record(resources)
    header = [line for patient in rec.dated("Patient") for line in _patient_lines(patient)]
    sections = [
        Section(
            "Condition",
            "Conditions",
            ("Condition", "Codes", "Status", "Onset"),
            [
                (_concept(r.get("code")), _codes(r.get("code")), _status(r.get("clinicalStatus")), _when(r))
                for r in rec.dated("Condition")
            ],
        ),
        Section(
            "MedicationStatement",
            "Medications",
            ("Medication", "Dosage", "Status", "Since"),
            [
                (rec.medication(r), _dosage(r.get("dosage")), status(r), _when(r))
                for r in rec.dated("MedicationStatement")
            ],
        ),
        Section(
            "MedicationRequest",
            "Prescriptions",
            ("Medication", "Instructions", "Status", "Ordered"),
            [
                (rec.medication(r), _dosage(r.get("dosageInstruction")), status(r), _when(r))
                for r in rec.dated("MedicationRequest")
            ],
        ),
        Section(
            "AllergyIntolerance",
            "Allergies",
            ("Allergy", "Reaction", "Criticality", "Recorded"),
            [
                (_concept(r.get("code")), _reactions(r), str(r.get("criticality", "")), _when(r))
                for r in rec.dated("AllergyIntolerance")
            ],
        ),
        Section(
            "Immunization",
            "Immunizations",
            ("Vaccine", "Codes", "Status", "Date"),
            [
                (_concept(r.get("vaccineCode")), _codes(r.get("vaccineCode")), status(r), _when(r))
                for r in rec.dated("Immunization")
            ],
        ),
        Section(
            "Procedure",
            "Procedures",
            ("Procedure", "Codes", "Status", "Date"),
            [(_concept(r.get("code")), _codes(r.get("code")), status(r), _when(r)) for r in rec.dated("Procedure")],
        ),
        Section(
            "DiagnosticReport",
            "Lab reports",
            ("Report", "Results", "Status", "Date"),
            [(_concept(r.get("code")), rec.lab_results(r), status(r), _when(r)) for r in rec.dated("DiagnosticReport")],
        ),
        Section(
            "Observation",
            "Vital signs",
            ("Measurement", "Value", "Date"),
            [
                (_concept(r.get("code")), _observation_value(r), _when(r))
                for r in rec.dated("Observation")
                if not _is_lab(r)
            ],
        ),
        Section(
            "Observation",
            "Lab results",
            ("Test", "Value", "Date"),
            [
                (_concept(r.get("code")), _observation_value(r), _when(r))
                for r in rec.dated("Observation")
                if _is_lab(r)
            ],
        ),
        Section(
            "Encounter",
            "Encounters",
            ("Type", "Class", "Start", "End"),
            [
                (
                    ", ".join(_concept(t) for t in r.get("type", [])),
                    str((r.get("class") or {}).get("display", "")),
                    period(r, "start"),
                    period(r, "end"),
                )
                for r in rec.dated("Encounter")
            ],
        ),
        Section(
            "DocumentReference",
            "Documents",
            ("Document", "Type", "Date"),
            [
                (str(r.get("description", "")), _concept(r.get("type")), _when(r))
                for r in rec.dated("DocumentReference")
            ],
        ),
    ]
    covered = {s.resource_type for s in sections} | {"Patient"} | SUPPORTING_TYPES  # shown via referrers
    for kind in (k for k in rec.types if k not in covered):
        rows = [
            (_concept(r.get("code")) or str(r.get("name", "")) or str(r.get("id", "")), _when(r))
            for r in rec.dated(kind)
        ]
        sections.append(Section(kind, kind, ("Summary", "Date"), rows))
    return header, [s for s in sections if s.rows]


_STYLE = (
    "body{font-family:Helvetica,Arial,sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse;width:100%;margin-bottom:1.5em}"
    "th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
    "th{background:#f0f3fa}h2{margin-top:1.5em}"
)


def render_html(resources: Iterable[Mapping[str, Any]]) -> bytes:
    """A standalone HTML page (UTF-8) summarising the resources; all text is escaped."""
    header, sections = summary_sections(resources)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{TITLE}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{TITLE}</h1>",
        '<div class="patient">' + "".join(f"<p>{escape(line)}</p>" for line in header) + "</div>",
    ]
    if not sections:
        parts.append("<p>No clinical data.</p>")
    for section in sections:
        slug = escape(section.title.lower().replace(" ", "-"))
        parts.append(f'<section id="{slug}"><h2>{escape(section.title)} ({len(section.rows)})</h2><table>')
        parts.append("<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in section.headers) + "</tr></thead><tbody>")
        parts.extend("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in section.rows)
        parts.append("</tbody></table></section>")
    parts.append("</body></html>")
    return "\n".join(parts).encode("utf-8")


def render_pdf(resources: Iterable[Mapping[str, Any]]) -> bytes:
    """The same summary as a small text PDF."""
    header, sections = summary_sections(resources)
    lines = [*header]
    for section in sections:
        lines += ["", f"== {section.title} ({len(section.rows)}) ==", " | ".join(section.headers)]
        lines += [" | ".join(cell for cell in row) for row in section.rows]
    if not sections:
        lines += ["", "No clinical data."]
    return pdf_document(TITLE, lines)
