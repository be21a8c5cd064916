"""The emulator's consolidated data: a seed patient's FHIR R4 record, Metriport's filters, the bundle.

Why: a consolidated query returns the patient's FHIR resources filtered by `resources`, `dateFrom`
and `dateTo`, as a searchset Bundle file (docs/metriport.md §3.5, §5.1 item 10). The record is built by
`fhir_build.RecordBuilder`; this module is the public entry the emulator backend uses.

Validation: fhir.resources 8.x models R5 at its top level; its `fhir.resources.R4B` subpackage is
FHIR R4B (4.3), which keeps R4's resource shapes for everything generated here, so `validate()`
uses the R4B models as the closest available stand-in for R4.

Bundle entries use `urn:uuid:<id>` fullUrls and resources reference each other as `Type/id`, as
Metriport's consolidated bundles do; a reference resolves to the entry with that type and id.

Filters: the Patient is always kept. Other resources must be of a requested type (case-sensitive;
all types when none are given) and, when they have a clinical date (`DATE_PATHS`), that date must
fall within [date_from, date_to] (inclusive, on the calendar date). Supporting resources
(Medication, Organization, Practitioner, ...) referenced by a kept resource are kept too, the way
Metriport adds missing references, so a MedicationRequest's Medication resolves. A reference to a
clinical resource that the filter excluded (an Observation's Encounter when only Observations were
asked for) is left dangling, as in a real filtered search.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping
from datetime import date
from typing import Any

from metriport_flows.client.signing import compact_json
from metriport_sandbox.fhir_build import RecordBuilder
from metriport_sandbox.seed import SEED_PATIENTS

# Where each resource type keeps its clinical date; the first one present wins.
DATE_PATHS: dict[str, tuple[tuple[str, ...], ...]] = {
    "Encounter": (("period", "start"),),
    "Condition": (("onsetDateTime",), ("onsetPeriod", "start"), ("recordedDate",)),
    "Observation": (("effectiveDateTime",), ("effectivePeriod", "start"), ("effectiveInstant",), ("issued",)),
    "DiagnosticReport": (("effectiveDateTime",), ("effectivePeriod", "start"), ("issued",)),
    "MedicationRequest": (("authoredOn",),),
    "MedicationStatement": (("effectiveDateTime",), ("effectivePeriod", "start"), ("dateAsserted",)),
    "MedicationAdministration": (("effectiveDateTime",), ("effectivePeriod", "start")),
    "MedicationDispense": (("whenHandedOver",), ("whenPrepared",)),
    "AllergyIntolerance": (("onsetDateTime",), ("onsetPeriod", "start"), ("recordedDate",)),
    "Immunization": (("occurrenceDateTime",), ("recorded",)),
    "Procedure": (("performedDateTime",), ("performedPeriod", "start")),
    "DocumentReference": (("date",), ("context", "period", "start")),
    "Composition": (("date",),),
    "CarePlan": (("period", "start"), ("created",)),
    "FamilyMemberHistory": (("date",),),
    "ServiceRequest": (("authoredOn",), ("occurrenceDateTime",)),
    "Coverage": (("period", "start"),),
}
# Resources with no clinical date that other resources point at; they follow their referrers.
SUPPORTING_TYPES = frozenset({"Organization", "Practitioner", "PractitionerRole", "Medication", "Location"})


def patient_resources(
    patient_id: str,
    seed_key: str,
    rng: random.Random,
    demographics: Mapping[str, Any] | None = None,
) -> list[dict]:
    """The seed patient's record: the Patient (id `patient_id`) first, then its clinical data.

    `demographics` (API shape) replaces the seed's in the Patient resource, e.g. for a patient whose
    stored demographics differ from the seed; the clinical data still comes from `seed_key`.
    """
    demo = dict(demographics) if demographics is not None else SEED_PATIENTS[seed_key].demographics()
    return RecordBuilder(patient_id, seed_key, demo, rng).build()


def _dig(resource: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = resource
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def resource_date(resource: Mapping[str, Any]) -> date | None:
    """The calendar date a resource is filtered on, or None when it has none."""
    for path in DATE_PATHS.get(resource.get("resourceType", ""), (("date",),)):
        value = _dig(resource, path)
        if isinstance(value, str) and value:
            text = value[:10]
            text += "-01-01"[len(text) - 4 :] if len(text) < 10 else ""  # "2020" / "2020-05" partial dates
            return date.fromisoformat(text)
    return None


def filter_resources(
    resources: Iterable[Mapping[str, Any]],
    types: set[str] | None,
    date_from: date | None,
    date_to: date | None,
) -> list[dict]:
    """The Patient, the matching resources, and the supporting resources they reference, in order."""
    resources = list(resources)
    selected: set[int] = set()
    for index, resource in enumerate(resources):
        kind = resource.get("resourceType")
        if kind == "Patient":
            selected.add(index)
            continue
        if types and kind not in types:
            continue
        when = resource_date(resource)
        if when is not None and (
            (date_from is not None and when < date_from) or (date_to is not None and when > date_to)
        ):
            continue
        selected.add(index)
    supporting = {
        f"{r['resourceType']}/{r['id']}": i
        for i, r in enumerate(resources)
        if r.get("resourceType") in SUPPORTING_TYPES
    }
    pending = sorted(selected)
    while pending:
        for target in references(resources[pending.pop()]):
            index = supporting.get(target)
            if index is not None and index not in selected:
                selected.add(index)
                pending.append(index)
    return [dict(resources[i]) for i in sorted(selected)]


def full_url(resource: Mapping[str, Any]) -> str:
    return f"urn:uuid:{resource['id']}"


def bundle_entry(resource: Mapping[str, Any]) -> dict:
    return {"fullUrl": full_url(resource), "resource": resource, "search": {"mode": "match"}}


def bundle(resources: Iterable[Mapping[str, Any]]) -> dict:
    entries = [bundle_entry(r) for r in resources]
    return {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}


def bundle_json(resources: Iterable[Mapping[str, Any]]) -> bytes:
    """The consolidated data file: a compact searchset Bundle (keys resourceType, type, total, entry)."""
    return compact_json(bundle(resources))


def validate(resource: Mapping[str, Any]) -> None:
    """Raise pydantic's ValidationError unless `resource` is valid FHIR (R4B models, see above)."""
    from fhir.resources.R4B import get_fhir_model_class

    get_fhir_model_class(resource["resourceType"]).model_validate(dict(resource))


def references(node: Any) -> Iterator[str]:
    """Every `reference` string inside a resource (or any JSON value)."""
    if isinstance(node, Mapping):
        target = node.get("reference")
        if isinstance(target, str):
            yield target
        for value in node.values():
            yield from references(value)
    elif isinstance(node, list):
        for value in node:
            yield from references(value)


def unresolved_references(resources: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every `Type/id` reference inside the resources that names no resource among them."""
    resources = list(resources)
    known = {f"{r['resourceType']}/{r['id']}" for r in resources}
    return [target for r in resources for target in references(r) if target not in known]
