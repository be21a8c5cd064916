"""Bulk patient create (§2.2, §3.5): job waiting -> processing (CSV uploaded at the signed PUT URL, single use)
-> completed once every imported patient's document query has finished (or when the control plane says so).
Also the HL7 notification messages (patient.admit / patient.discharge). One operation family: it reaches
shared state through the `Core` it is given."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from typing import Any, Protocol

from metriport_sandbox import dtos
from metriport_sandbox.core import Core
from metriport_sandbox.errors import ApiError, bad_request, not_found
from metriport_sandbox.ids import uuid7
from metriport_sandbox.state import BulkImport, Patient, Tenant, WebhookRequest, now_iso

BULK_CREATE = "medical.bulk-patient-create"
NOTIFICATION_TYPES = ("patient.admit", "patient.discharge")
RESULT_COLUMNS = ("metriportId", "status", "reason")


def _group(row: dict[str, str], names: tuple[str, ...], suffix: str) -> dict[str, str]:
    return {n: (row.get(f"{n}{suffix}") or "").strip() for n in names}


def row_to_demographics(row: dict[str, str]) -> dict[str, Any]:
    """One CSV row (lower-cased headers) in the API's demographics shape."""
    dob = (row.get("dob") or "").strip()
    if re.fullmatch(r"\d{8}", dob):
        dob = f"{dob[:4]}-{dob[4:6]}-{dob[6:]}"
    gender = (row.get("gender") or "").strip().upper()[:1]
    body: dict[str, Any] = {
        "firstName": (row.get("firstname") or "").strip(),
        "lastName": (row.get("lastname") or "").strip(),
        "dob": dob,
        "genderAtBirth": gender,
    }
    addresses, contacts = [], []
    for suffix in ["", *(f"-{n}" for n in range(1, 11))]:
        addr = _group(row, ("addressline1", "addressline2", "city", "state", "zip"), suffix)
        if any(addr.values()):
            addresses.append(
                {
                    "addressLine1": addr["addressline1"] or None,
                    "city": addr["city"] or None,
                    "state": addr["state"] or None,
                    "zip": addr["zip"] or None,
                    "country": "USA",
                    **({"addressLine2": addr["addressline2"]} if addr["addressline2"] else {}),
                }
            )
        contact = _group(row, ("phone", "email"), suffix)
        if any(contact.values()):
            contacts.append({k: v for k, v in contact.items() if v})
    body["address"] = addresses
    if contacts:
        body["contact"] = contacts
    if (row.get("externalid") or "").strip():
        body["externalId"] = row["externalid"].strip()
    return body


class StartDocumentQuery(Protocol):
    """The documents family's start call: each imported patient's records are queried at once."""

    def __call__(
        self, tenant_id: str, patient_id: str | None, facility_id: str | None, override: bool, body: Any
    ) -> dict: ...


class BulkOps:
    """Bulk patient create (the CSV upload and its result) and HL7 notifications."""

    def __init__(self, core: Core, start_document_query: StartDocumentQuery) -> None:
        self.core = core
        self.start_document_query = start_document_query

    def start_bulk_create(self, tenant_id: str, facility_id: str | None, dry_run: bool) -> dict:
        tenant = self.core.tenant(tenant_id)
        if facility_id:
            self.core.get_facility(tenant_id, facility_id)
        elif len(tenant.facilities) == 1:
            facility_id = next(iter(tenant.facilities))
        elif not tenant.facilities:
            raise not_found("Could not find facility")
        else:
            raise bad_request("facilityId is required when the customer has more than one facility")
        job = BulkImport(uuid7(tenant.rng), facility_id, dry_run, now_iso())
        tenant.bulk_imports[job.request_id] = job
        upload = self.core.sign_url(
            f"/_sandbox/files/bulk-create/{tenant.id}/{job.request_id}/upload.csv", "bulk-upload"
        )
        return {
            "requestId": job.request_id,
            "facilityId": facility_id,
            "status": job.status,
            "uploadUrl": upload,
            "params": {"dryRun": dry_run},
            "createdAt": job.created_at,
        }

    def find_bulk_import(self, request_id: str) -> tuple[Tenant, BulkImport]:
        for tenant in self.core.tenants.values():
            if request_id in tenant.bulk_imports:
                return tenant, tenant.bulk_imports[request_id]
        raise not_found("Bulk patient import not found")

    def receive_bulk_csv(self, tenant: Tenant, job: BulkImport, content: bytes) -> None:
        """The PUT of the CSV: the job enters `processing` (one webhook) and its rows are imported."""
        if job.upload_used:
            raise ApiError(403, "upload URL already used", "text/plain")
        job.upload_used = True
        job.status = "processing"
        processing = self._bulk_message(tenant, job)
        self.core.spawn(self._run_bulk_import(tenant, job, content, self.core.delay(tenant), processing))

    def _bulk_message(self, tenant: Tenant, job: BulkImport) -> WebhookRequest:
        body: dict[str, Any] = {"requestId": job.request_id, "status": job.status}
        if job.status == "completed":
            body["result"] = self.core.sign_url(
                f"/_sandbox/files/bulk-create/{tenant.id}/{job.request_id}/result.csv", "bulk-result"
            )
        return self.core.sender.store(
            tenant, BULK_CREATE, {"bulkPatientCreate": body}, request_id=job.request_id, fault_scope=job.request_id
        )

    async def _run_bulk_import(
        self, tenant: Tenant, job: BulkImport, content: bytes, delay: float, processing: WebhookRequest
    ) -> None:
        # Metriport reports `processing` long before the import ends: never let `completed` overtake it.
        await asyncio.gather(asyncio.sleep(delay), self.core.sender.wait_sent(processing))
        text = content.decode("utf-8-sig", errors="replace")
        reader = csv.reader(io.StringIO(text))
        header = next(reader, [])
        keys = [h.strip().lower() for h in header]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([*header, *RESULT_COLUMNS])
        created: list[Patient] = []
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            row = dict(zip(keys, cells))
            patient_id, status, reason = "", "succeeded", ""
            try:
                body = row_to_demographics(row)
                if job.dry_run:
                    from metriport_sandbox.validation import demographics

                    demographics(body)
                else:
                    patient = self.core.create_patient(tenant.id, job.facility_id, body)
                    patient_id = patient.id
                    created.append(patient)
            except ApiError as exc:
                status = "failed"
                reason = (
                    exc.body.get("detail") or exc.body.get("message") if isinstance(exc.body, dict) else str(exc.body)
                )
            writer.writerow([*cells, patient_id, status, reason])
        job.result_csv = out.getvalue().encode()
        for patient in created:
            job.pending_patients.add(patient.id)
            self.start_document_query(tenant.id, patient.id, None, False, None)
        if not job.pending_patients:
            self.complete_bulk_import(tenant, job)

    def document_query_finished(self, tenant: Tenant, patient: Patient) -> None:
        for job in tenant.bulk_imports.values():
            if patient.id in job.pending_patients:
                job.pending_patients.discard(patient.id)
                if not job.pending_patients and job.result_csv is not None:
                    self.complete_bulk_import(tenant, job)

    def complete_bulk_import(self, tenant: Tenant, job: BulkImport) -> dict:
        if job.status != "completed":
            job.pending_patients.clear()
            if job.result_csv is None:
                job.result_csv = b"metriportId,status,reason\n"
            job.status = "completed"
            self._bulk_message(tenant, job)
        return {"requestId": job.request_id, "status": job.status}

    # -- HL7 notifications -----------------------------------------------------------------------
    def send_notification(
        self, patient_id: str, type_: str, admit: str | None = None, discharge: str | None = None
    ) -> dict:
        if type_ not in NOTIFICATION_TYPES:
            raise bad_request(f"type must be one of {', '.join(NOTIFICATION_TYPES)}")
        found = self.core.find_patient(patient_id)
        if found is None:
            raise not_found("Could not find patient")
        tenant, patient = found
        request_id = uuid7(tenant.rng)
        admit = admit or now_iso()
        encounter = {
            "resourceType": "Encounter",
            "id": request_id,
            "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "subject": {"reference": f"Patient/{patient.id}"},
            "period": {"start": admit},
        }
        if type_ == "patient.discharge":
            discharge = discharge or now_iso()
            encounter["status"] = "finished"
            encounter["period"]["end"] = discharge
        tenant.notification_bundles[request_id] = [dtos.patient_fhir(patient), encounter]
        url = self.core.sign_url(
            f"/_sandbox/files/notifications/{tenant.id}/{patient.id}/{request_id}.json", "notification"
        )
        payload: dict[str, Any] = {
            **dtos.patient_item(patient),
            "url": url,
            "whenSourceSent": now_iso(),
            "admitTimestamp": admit,
        }
        if type_ == "patient.discharge":
            payload["dischargeTimestamp"] = discharge
        message = self.core.sender.store(
            tenant,
            type_,
            {"payload": payload},
            request_id=request_id,
            patient_id=patient.id,
            fault_scope=str(patient.ordinal),
        )
        return {"messageId": message.message_id, "requestId": request_id}
