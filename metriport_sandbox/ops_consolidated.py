"""Consolidated data queries (§2.2, §3.5, §5.3): start (dedupe while processing, finished ones dropped from
`queries`), status, get, webhook GET; the job builds the searchset webhook bundle whose single
DocumentReference points at signed json+gzip (or pdf / html) files. One operation family: it reaches shared
state through the `Core` it is given."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

from metriport_sandbox import dtos, validation
from metriport_sandbox.core import Core
from metriport_sandbox.errors import bad_request, not_found
from metriport_sandbox.ids import uuid7
from metriport_sandbox.state import (
    ConsolidatedQuery,
    ConsolidatedResult,
    Patient,
    Tenant,
    now_iso,
)

CONSOLIDATED = "medical.consolidated-data"
CONTENT_TYPES = {"json": "application/json", "gzip": "application/gzip", "pdf": "application/pdf", "html": "text/html"}


def empty_bundle() -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []}


def filters_for(query: ConsolidatedQuery, json_with_data: bool) -> dict:
    """`filters` as the code builds it: all strings ("" when absent) for json with data, else dates omitted."""
    resources = ", ".join(query.resources)
    if json_with_data:
        return {
            "resources": resources,
            "dateFrom": query.date_from or "",
            "dateTo": query.date_to or "",
            "conversionType": query.conversion_type,
        }
    body: dict[str, Any] = {"resources": resources}
    if query.date_from:
        body["dateFrom"] = query.date_from
    if query.date_to:
        body["dateTo"] = query.date_to
    body["conversionType"] = query.conversion_type
    return body


class ConsolidatedOps:
    """Consolidated data: queries, counts, the webhook with the bundle URL, medical-record summaries."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def start_consolidated(
        self,
        tenant_id: str,
        patient_id: str,
        conversion_type: str | None,
        resources: str | None,
        date_from: str | None,
        date_to: str | None,
        from_dashboard: bool,
        body: Any,
    ) -> dict:
        from metriport_flows.client.models import RESOURCE_TYPES

        tenant = self.core.tenant(tenant_id)
        patient = self.core.get_patient(tenant_id, patient_id)
        conversion = validation.conversion_type(conversion_type)
        names = validation.resource_list(resources, frozenset(RESOURCE_TYPES))
        low = validation.parse_date(date_from, "dateFrom") if date_from else None
        high = validation.parse_date(date_to, "dateTo") if date_to else None
        metadata = validation.metadata(body)
        for query in patient.consolidated:
            if query.status == "processing" and query.same_params(names, low, high, conversion):
                return query.dto()
        patient.consolidated = [q for q in patient.consolidated if q.status == "processing"]
        query = ConsolidatedQuery(uuid7(tenant.rng), now_iso(), names, low, high, conversion, from_dashboard)
        patient.consolidated.append(query)
        patient.metadata["consolidated"] = metadata
        self.core.spawn(self._run_consolidated(tenant, patient, query, self.core.delay(tenant)))
        return query.dto()

    def list_consolidated(self, tenant_id: str, patient_id: str) -> dict:
        patient = self.core.get_patient(tenant_id, patient_id)
        queries = [q.dto() for q in patient.consolidated] or None
        return {"status": patient.consolidated[-1].status if patient.consolidated else None, "queries": queries}

    def get_consolidated(self, tenant_id: str, patient_id: str, request_id: str) -> dict:
        patient = self.core.get_patient(tenant_id, patient_id)
        for query in patient.consolidated:
            if query.request_id == request_id:
                return query.dto()
        raise not_found("Consolidated query not found")

    def consolidated_webhook(self, tenant_id: str, patient_id: str, request_id: str | None) -> dict:
        if not request_id:
            raise bad_request("Missing requestId query param")
        self.core.get_patient(tenant_id, patient_id)
        result = self.core.tenant(tenant_id).consolidated_results.get(request_id)
        if result is None or result.patient_id != patient_id:
            raise not_found("Consolidated webhook not found")
        body: dict[str, Any] = {"requestId": request_id, "status": result.status}
        if result.file_url:
            body["fileUrl"] = result.file_url
        if result.gzip_url:
            body["gzipUrl"] = result.gzip_url
        body["conversionType"] = result.conversion_type
        if result.status == "completed" and not result.file_url:
            body["message"] = "No data found for the given filters"
        return body

    def consolidated_count(
        self,
        tenant_id: str,
        patient_id: str,
        resources: str | None,
        date_from: str | None,
        date_to: str | None,
    ) -> dict:
        """GET .../consolidated/count: resources per type in the patient's record, after the filters."""
        from metriport_flows.client.models import RESOURCE_TYPES
        from metriport_sandbox.fhir_data import filter_resources

        patient = self.core.get_patient(tenant_id, patient_id)
        names = validation.resource_list(resources, frozenset(RESOURCE_TYPES))
        low = validation.parse_date(date_from, "dateFrom") if date_from else None
        high = validation.parse_date(date_to, "dateTo") if date_to else None
        counts: dict[str, int] = {}
        kept = filter_resources(
            patient.resources or [],
            set(names) or None,
            date.fromisoformat(low) if low else None,
            date.fromisoformat(high) if high else None,
        )
        for resource in kept:
            if not names or resource["resourceType"] in names:
                counts[resource["resourceType"]] = counts.get(resource["resourceType"], 0) + 1
        return {
            "total": sum(counts.values()),
            "resources": counts,
            "filter": {"resources": ", ".join(names), "dateFrom": low, "dateTo": high},
        }

    def medical_record_status(self, tenant_id: str, patient_id: str) -> dict:
        patient = self.core.get_patient(tenant_id, patient_id)
        exists = bool(patient.resources)
        state = {"exists": exists, **({"createdAt": patient.record_at} if exists and patient.record_at else {})}
        return {"html": dict(state), "pdf": dict(state)}

    def medical_record_url(self, tenant_id: str, patient_id: str, conversion_type: str | None) -> str:
        """The pre-rendered summary (html or pdf) of the patient's whole record, 180 s; 404 without data."""
        patient = self.core.get_patient(tenant_id, patient_id)
        kind = validation.conversion_type(conversion_type, ("pdf", "html"))
        if not patient.resources:
            raise not_found("Medical record summary not found")
        return self.core.sign_url(
            f"/_sandbox/files/medical-record/{tenant_id}/{patient.id}/summary.{kind}", "medical-record"
        )

    def consolidated_resources(self, patient: Patient, query: ConsolidatedQuery) -> list[dict] | None:
        """The filtered record, or None when the patient has no data (no completed seed document query)."""
        from metriport_sandbox.fhir_data import filter_resources

        if not patient.resources:
            return None
        types = set(query.resources) or None
        low = date.fromisoformat(query.date_from) if query.date_from else None
        high = date.fromisoformat(query.date_to) if query.date_to else None
        kept = filter_resources(patient.resources, types, low, high)
        return kept if any(r.get("resourceType") != "Patient" for r in kept) else None

    async def _run_consolidated(self, tenant: Tenant, patient: Patient, query: ConsolidatedQuery, delay: float) -> None:
        await asyncio.sleep(delay)
        if tenant.patients.get(patient.id) is not patient:
            return
        failed = self.core.faults.chance(
            self.core.faults.consolidated_failed, "consolidated_failed", tenant.id, patient.ordinal, query.request_id
        )
        resources = None if failed else self.consolidated_resources(patient, query)
        status = "failed" if failed else "completed"
        result = ConsolidatedResult(query.request_id, patient.id, status, query.conversion_type, resources)
        bundle = empty_bundle()
        if resources is not None:
            base = f"/_sandbox/files/consolidated/{tenant.id}/{patient.id}/{query.request_id}"
            if query.conversion_type == "json":
                result.file_url = self.core.sign_url(f"{base}.json", "consolidated")
                result.gzip_url = self.core.sign_url(f"{base}.json.gz", "consolidated")
                attachments = [("json", result.file_url), ("gzip", result.gzip_url)]
            else:
                result.file_url = self.core.sign_url(f"{base}.{query.conversion_type}", "consolidated")
                attachments = [(query.conversion_type, result.file_url)]
            bundle = {
                "resourceType": "Bundle",
                "type": "searchset",
                "total": 1,
                "entry": [
                    {
                        "resource": {
                            "resourceType": "DocumentReference",
                            "subject": {"reference": f"Patient/{patient.id}"},
                            "content": [
                                {"attachment": {"contentType": CONTENT_TYPES[kind], "url": url}}
                                for kind, url in attachments
                            ],
                        }
                    }
                ],
            }
        tenant.consolidated_results[query.request_id] = result
        item = {**dtos.patient_item(patient), "status": status}
        if not failed:
            item["bundle"] = bundle
        item["filters"] = filters_for(query, resources is not None and query.conversion_type == "json")
        query.status = status
        if query.from_dashboard:
            self.core.sender.suppress(
                tenant, CONSOLIDATED, {"patients": [item]}, request_id=query.request_id, patient_id=patient.id
            )
            return
        self.core.sender.store(
            tenant,
            CONSOLIDATED,
            {"patients": [item]},
            request_id=query.request_id,
            patient_id=patient.id,
            metadata_flow="consolidated",
            fault_scope=str(patient.ordinal),
        )
