"""Document operations: document query (sandbox §5.1 and production §5.2 behaviour), document list, download
URL and bulk download URLs. One operation family: it reaches shared state through the `Core` it is given."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from metriport_sandbox import dtos, seed, validation
from metriport_sandbox.core import Core
from metriport_sandbox.errors import bad_request, forbidden, not_found
from metriport_sandbox.ids import uuid7
from metriport_sandbox.state import (
    BulkDownload,
    Document,
    DocumentQuery,
    Patient,
    Tenant,
    now_iso,
)

DOWNLOAD = "medical.document-download"
CONVERSION = "medical.document-conversion"
BULK_URLS = "medical.document-bulk-download-urls"
XML_TYPES = ("application/xml", "text/xml")


class DocumentOps:
    """Document queries (sandbox and production behaviour), document lists, downloads, bulk downloads.
    `on_query_finished` is told when a patient's query ends (the backend hands it to bulk imports)."""

    def __init__(self, core: Core, on_query_finished: Callable[[Tenant, Patient], None]) -> None:
        self.core = core
        self.on_query_finished = on_query_finished

    # -- document query --------------------------------------------------------------------------
    def start_document_query(
        self, tenant_id: str, patient_id: str | None, facility_id: str | None, override: bool, body: Any
    ) -> dict:
        if not patient_id:
            raise bad_request("Missing patientId query param")
        tenant = self.core.tenant(tenant_id)
        patient = self.core.get_patient(tenant_id, patient_id)
        metadata = validation.metadata(body)
        if facility_id and facility_id not in patient.facility_ids:
            raise bad_request("Patient not associated with given facility")
        patient.dq_posts += 1
        current = patient.document_query
        if current is not None and current.processing:
            return dict(current.progress)
        patient.dq_count += 1
        request_id = uuid7(tenant.rng)
        query = DocumentQuery(request_id, now_iso(), {"download": {"status": "processing"}})
        query.progress.update({"requestId": request_id, "startedAt": query.started_at, "triggerConsolidated": False})
        patient.document_query = query
        patient.metadata["document"] = metadata
        if self.core.faults.dq_stuck(patient.id, tenant.id, patient.ordinal, patient.dq_count):
            query.state = "stuck"
        else:
            rng = random.Random(f"{self.core.config.seed}:{tenant.id}:{patient.ordinal}:dq:{patient.dq_count}")
            self.core.spawn(self._run_document_query(tenant, patient, query, self.core.delay(tenant), override, rng))
        return dict(query.progress)

    def get_document_query(self, tenant_id: str, patient_id: str | None) -> dict:
        if not patient_id:
            raise bad_request("Missing patientId query param")
        patient = self.core.get_patient(tenant_id, patient_id)
        return dict(patient.document_query.progress) if patient.document_query else {}

    def _seed_documents(
        self, tenant: Tenant, patient: Patient, key: str, request_id: str, rng: random.Random
    ) -> list[Document]:
        from metriport_sandbox.documents import document_bytes

        docs = []
        for seed_doc, seed_file in seed.seed_document_files(key):
            doc_id = uuid7(rng)
            indexed, status = seed.indexed_and_status(seed_doc, rng)
            file_name = seed_file
            if self.core.config.mode == "production":
                ext = seed_file.rsplit(".", 1)[-1]
                file_name = f"{tenant.id}/{patient.id}/{tenant.id}_{patient.id}_{doc_id}.{ext}"
            docs.append(
                Document(
                    id=doc_id,
                    patient_id=patient.id,
                    request_id=request_id,
                    file_name=file_name,
                    seed_file=seed_file,
                    seed_key=key,
                    description=seed_doc.description,
                    type=seed_doc.type,
                    status=status,
                    indexed=indexed,
                    mime_type=seed_doc.mime_type,
                    size=len(document_bytes(seed_file, key)),
                    organization=rng.choice(seed.SEED_ORGANIZATIONS),
                )
            )
        return docs

    def _load_record(self, patient: Patient, key: str) -> None:
        from metriport_sandbox.fhir_data import patient_resources

        if patient.resources is None:
            rng = random.Random(f"{self.core.config.seed}:fhir:{key}:{patient.ordinal}")
            patient.resources = patient_resources(patient.id, key, rng, patient.demographics)
            patient.record_at = now_iso()

    async def _run_document_query(
        self,
        tenant: Tenant,
        patient: Patient,
        query: DocumentQuery,
        delay: float,
        override: bool,
        rng: random.Random,
    ) -> None:
        await asyncio.sleep(delay / 2)
        await self.core.document_queries_released.wait()
        if tenant.patients.get(patient.id) is not patient or patient.document_query is not query:
            return
        if self.core.config.mode == "sandbox":
            await self._sandbox_document_query(tenant, patient, query, rng, delay / 2)
        else:
            await self._production_document_query(tenant, patient, query, override, rng, delay / 2)
        self.on_query_finished(tenant, patient)

    def _doc_message(
        self,
        tenant: Tenant,
        patient: Patient,
        type_: str,
        status: str,
        documents: list[Document] | None,
        request_id: str | None,
    ):
        item = dtos.patient_item(patient)
        if documents is not None:
            item["documents"] = [dtos.document_dto(d) for d in documents]
        item["status"] = status
        return self.core.sender.store(
            tenant,
            type_,
            {"patients": [item]},
            request_id=request_id,
            patient_id=patient.id,
            metadata_flow="document",
            fault_scope=str(patient.ordinal),
        )

    async def _sandbox_document_query(
        self, tenant: Tenant, patient: Patient, query: DocumentQuery, rng: random.Random, pause: float
    ) -> None:
        key = seed.seed_key(patient.first_name)
        if key is None:
            query.progress = {"download": {"status": "completed"}, "requestId": query.request_id}
            query.state = "completed"
            self._doc_message(tenant, patient, DOWNLOAD, "completed", [], query.request_id)
            return
        query.state = "downloading"
        query.progress["download"] = {"total": 7, "status": "processing"}
        query.progress["convert"] = {"total": 1, "status": "processing"}
        query.documents = self._seed_documents(tenant, patient, key, query.request_id, rng)
        patient.list_documents(query.documents)
        self._load_record(patient, key)
        await asyncio.sleep(pause)
        query.progress["download"] = {"total": 7, "status": "completed", "successful": 7}
        query.progress["convert"] = {"total": 1, "status": "completed"}
        query.state = "completed"
        self._doc_message(tenant, patient, DOWNLOAD, "completed", query.documents, query.request_id)
        self._doc_message(tenant, patient, CONVERSION, "completed", None, None)

    async def _production_document_query(
        self,
        tenant: Tenant,
        patient: Patient,
        query: DocumentQuery,
        override: bool,
        rng: random.Random,
        pause: float,
    ) -> None:
        if self.core.faults.chance(
            self.core.faults.dq_failed, "dq_failed", tenant.id, patient.ordinal, patient.dq_count
        ):
            query.progress["download"] = {"status": "failed"}
            query.progress["convert"] = {"status": "failed"}
            query.state = "failed"
            sent = self._doc_message(tenant, patient, DOWNLOAD, "failed", None, query.request_id)
            await self.core.sender.wait_sent(sent)
            self._doc_message(tenant, patient, CONVERSION, "failed", None, query.request_id)
            return
        key = seed.seed_key(patient.first_name)
        found: list[Document] = []
        if key is not None and (override or not patient.documents):
            found = self._seed_documents(tenant, patient, key, query.request_id, rng)
            patient.list_documents(found)
            self._load_record(patient, key)
        query.documents = found
        convertible = sum(d.mime_type in XML_TYPES for d in found)
        query.state = "downloading"
        query.progress["download"] = {"status": "completed", "total": len(found), "successful": len(found)}
        query.progress["convert"] = {"status": "processing", "total": convertible}
        sent = self._doc_message(tenant, patient, DOWNLOAD, "completed", found, query.request_id)
        query.progress["download"]["webhookSent"] = True
        await self.core.sender.wait_sent(sent)
        query.state = "converting"
        await asyncio.sleep(pause)
        query.progress["convert"] = {"status": "completed", "total": convertible, "successful": convertible}
        query.state = "completed"
        self._doc_message(tenant, patient, CONVERSION, "completed", None, query.request_id)
        query.progress["convert"]["webhookSent"] = True

    # -- documents -------------------------------------------------------------------------------
    def list_documents(
        self,
        tenant_id: str,
        patient_id: str | None,
        date_from: str | None,
        date_to: str | None,
        output: str | None,
    ) -> list[dict]:
        if not patient_id:
            raise bad_request("Missing patientId query param")
        patient = self.core.get_patient(tenant_id, patient_id)
        low = validation.parse_date(date_from, "dateFrom") if date_from else None
        high = validation.parse_date(date_to, "dateTo") if date_to else None
        output = validation.conversion_type(output or "fhir", ("fhir", "dto")) if output else "fhir"
        docs = [
            d
            for d in patient.documents
            if (low is None or d.indexed[:10] >= low) and (high is None or d.indexed[:10] <= high)
        ]
        if output == "dto":
            return [dtos.document_dto(d) for d in docs]
        return [dtos.document_fhir(d, self.core.config.public_url) for d in docs]

    def find_document(self, tenant_id: str, file_name: str) -> Document | None:
        found = None
        for patient in self.core.tenant(tenant_id).patients.values():
            for doc in patient.stored_documents.values():  # the latest of a name wins
                if doc.file_name == file_name:
                    found = doc
        return found

    def download_url(self, tenant_id: str, file_name: str | None, conversion_type: str | None) -> str:
        if not file_name:
            raise bad_request("Missing fileName query param")
        if self.core.config.mode == "production" and tenant_id not in file_name:
            raise forbidden("File name is invalid or does not exist")
        doc = self.find_document(tenant_id, file_name)
        if doc is None:
            raise not_found("File not found")
        name = doc.file_name.rsplit("/", 1)[-1]
        if conversion_type:
            validation.conversion_type(conversion_type, ("html", "pdf"))
            if doc.mime_type not in XML_TYPES:
                raise bad_request("Conversion type is only supported for XML documents")
            name = f"{name.rsplit('.', 1)[0]}.{conversion_type}"
        return self.core.sign_url(f"/_sandbox/files/documents/{tenant_id}/{doc.id}/{name}", "document")

    # -- bulk download URLs ----------------------------------------------------------------------
    def start_bulk_download(self, tenant_id: str, patient_id: str | None, body: Any) -> dict:
        if not patient_id:
            raise bad_request("Missing patientId query param")
        tenant = self.core.tenant(tenant_id)
        patient = self.core.get_patient(tenant_id, patient_id)
        metadata = validation.metadata(body)
        if patient.bulk_download is not None and patient.bulk_download.status == "processing":
            return {"status": "processing", "requestId": patient.bulk_download.request_id}
        job = patient.bulk_download = BulkDownload(uuid7(tenant.rng))
        patient.metadata["download"] = metadata
        self.core.spawn(self._run_bulk_download(tenant, patient, job, self.core.delay(tenant)))
        return {"status": job.status, "requestId": job.request_id}

    async def _run_bulk_download(self, tenant: Tenant, patient: Patient, job: BulkDownload, delay: float) -> None:
        await asyncio.sleep(delay)
        if tenant.patients.get(patient.id) is not patient:
            return
        documents = []
        for doc in patient.documents:
            name = doc.file_name.rsplit("/", 1)[-1]
            url = self.core.sign_url(f"/_sandbox/files/documents/{tenant.id}/{doc.id}/{name}", "bulk-download")
            documents.append({**dtos.document_dto(doc), "url": url})
        item = {**dtos.patient_item(patient), "documents": documents, "status": "completed"}
        job.status = "completed"
        self.core.sender.store(
            tenant,
            BULK_URLS,
            {"patients": [item]},
            request_id=job.request_id,
            patient_id=patient.id,
            metadata_flow="download",
            fault_scope=str(patient.ordinal),
        )
