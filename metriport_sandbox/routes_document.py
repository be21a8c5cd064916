"""Document query, document list, download URLs and bulk patient create routes under /medical/v1."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from metriport_sandbox.deps import BackendDep, TenantDep, flag, json_body, reply

router = APIRouter()


@router.post("/document/query")
async def start_document_query(
    request: Request,
    backend: BackendDep,
    tenant: TenantDep,
    patientId: str | None = None,
    facilityId: str | None = None,  # noqa: N803
    override: str | None = None,
) -> JSONResponse:
    headers = backend.check_api(tenant, "documentQuery")
    progress = backend.documents.start_document_query(
        tenant, patientId, facilityId, flag(override), await json_body(request)
    )
    return reply(progress, 200, headers)


@router.get("/document/query")
async def get_document_query(backend: BackendDep, tenant: TenantDep, patientId: str | None = None) -> JSONResponse:  # noqa: N803
    backend.check_api(tenant, "documentQueryStatus")
    return reply(backend.documents.get_document_query(tenant, patientId))


@router.get("/document")
async def list_documents(
    backend: BackendDep,
    tenant: TenantDep,
    patientId: str | None = None,  # noqa: N803
    dateFrom: str | None = None,
    dateTo: str | None = None,  # noqa: N803
    output: str | None = None,
) -> JSONResponse:
    backend.check_api(tenant, "documentList")
    return reply({"documents": backend.documents.list_documents(tenant, patientId, dateFrom, dateTo, output)})


@router.get("/document/download-url")
async def download_url(
    backend: BackendDep,
    tenant: TenantDep,
    fileName: str | None = None,  # noqa: N803
    conversionType: str | None = None,
) -> JSONResponse:  # noqa: N803
    backend.check_api(tenant, "documentDownloadUrl")
    return reply({"url": backend.documents.download_url(tenant, fileName, conversionType)})


@router.post("/document/download-url/bulk")
async def bulk_download_url(
    request: Request, backend: BackendDep, tenant: TenantDep, patientId: str | None = None
) -> JSONResponse:  # noqa: N803
    backend.check_api(tenant, "bulkDownloadUrl")
    return reply(backend.documents.start_bulk_download(tenant, patientId, await json_body(request)))


@router.post("/patient/bulk")
async def bulk_patient_create(
    backend: BackendDep,
    tenant: TenantDep,
    facilityId: str | None = None,  # noqa: N803
    dryRun: str | None = None,
) -> JSONResponse:  # noqa: N803
    backend.check_api(tenant, "bulkPatientCreate")
    return reply(backend.bulk.start_bulk_create(tenant, facilityId, flag(dryRun)))
