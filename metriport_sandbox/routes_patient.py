"""Facility, patient and consolidated-data routes under /medical/v1."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response

from metriport_sandbox import dtos
from metriport_sandbox.deps import BackendDep, TenantDep, flag, json_body, reply

router = APIRouter()


@router.post("/facility")
async def create_facility(request: Request, backend: BackendDep, tenant: TenantDep) -> JSONResponse:
    backend.check_api(tenant, "facility")
    return reply(dtos.facility_dto(backend.create_facility(tenant, await json_body(request))), 201)


@router.get("/facility")
async def list_facilities(backend: BackendDep, tenant: TenantDep) -> JSONResponse:
    backend.check_api(tenant, "facility")
    return reply({"facilities": [dtos.facility_dto(f) for f in backend.list_facilities(tenant)]})


@router.get("/facility/{facility_id}")
async def get_facility(facility_id: str, backend: BackendDep, tenant: TenantDep) -> JSONResponse:
    backend.check_api(tenant, "facility")
    return reply(dtos.facility_dto(backend.get_facility(tenant, facility_id)))


@router.put("/facility/{facility_id}")
async def update_facility(facility_id: str, request: Request, backend: BackendDep, tenant: TenantDep) -> JSONResponse:
    backend.check_api(tenant, "facility")
    return reply(dtos.facility_dto(backend.update_facility(tenant, facility_id, await json_body(request))))


@router.delete("/facility/{facility_id}")
async def delete_facility(facility_id: str, backend: BackendDep, tenant: TenantDep) -> Response:
    backend.check_api(tenant, "facility")
    backend.delete_facility(tenant, facility_id)
    return Response(status_code=204)


@router.post("/patient")
async def create_patient(
    request: Request, backend: BackendDep, tenant: TenantDep, facilityId: str | None = None
) -> JSONResponse:  # noqa: N803
    headers = backend.check_api(tenant, "patientCreateOrUpdate")
    patient = backend.create_patient(tenant, facilityId, await json_body(request))
    return reply(dtos.patient_dto(patient), 201, headers)


@router.post("/patient/match")
async def match_patient(request: Request, backend: BackendDep, tenant: TenantDep) -> JSONResponse:
    backend.check_api(tenant, "patientMatch")
    return reply(dtos.patient_dto(backend.match_patient(tenant, await json_body(request))))


@router.get("/patient")
async def list_patients(
    request: Request,
    backend: BackendDep,
    tenant: TenantDep,
    facilityId: str | None = None,  # noqa: N803
    count: int | None = None,
    fromItem: str | None = None,  # noqa: N803
    toItem: str | None = None,
) -> JSONResponse:  # noqa: N803
    backend.check_api(tenant, "patientList")
    patients = backend.list_patients(tenant, facilityId)
    if count is None and fromItem is None and toItem is None:
        return reply({"patients": [dtos.patient_dto(p) for p in patients]})
    size = max(1, min(count or 50, 500))
    ids = [p.id for p in patients]
    if toItem is not None:
        end = len([i for i in ids if i <= toItem])
        start = max(0, end - size)
    else:
        start = len([i for i in ids if fromItem is not None and i < fromItem])
        end = min(len(ids), start + size)
    page = patients[start:end]
    meta: dict = {"itemsOnPage": len(page), "itemsInTotal": len(patients)}
    base = request.url.remove_query_params(["fromItem", "toItem", "count"])
    if end < len(ids):
        meta["nextPage"] = str(base.include_query_params(fromItem=ids[end], count=size))
    if start > 0:
        meta["prevPage"] = str(base.include_query_params(toItem=ids[start - 1], count=size))
    return reply({"meta": meta, "patients": [dtos.patient_dto(p) for p in page]})


@router.get("/patient/{patient_id}")
async def get_patient(
    patient_id: str, backend: BackendDep, tenant: TenantDep, output: str | None = None
) -> JSONResponse:
    backend.check_api(tenant, "patientGet")
    patient = backend.get_patient(tenant, patient_id)
    return reply(dtos.patient_fhir(patient) if output == "fhir" else dtos.patient_dto(patient))


@router.put("/patient/{patient_id}")
async def update_patient(
    patient_id: str,
    request: Request,
    backend: BackendDep,
    tenant: TenantDep,
    facilityId: str | None = None,  # noqa: N803
    if_match: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    headers = backend.check_api(tenant, "patientCreateOrUpdate")
    patient = backend.update_patient(tenant, patient_id, facilityId, await json_body(request), if_match)
    return reply(dtos.patient_dto(patient), 200, headers)


@router.delete("/patient/{patient_id}")
async def delete_patient(patient_id: str, backend: BackendDep, tenant: TenantDep) -> Response:
    backend.check_api(tenant, "patientDelete")
    backend.delete_patient(tenant, patient_id)
    return Response(status_code=204)


@router.post("/patient/{patient_id}/consolidated/query")
async def start_consolidated(
    patient_id: str,
    request: Request,
    backend: BackendDep,
    tenant: TenantDep,
    conversionType: str | None = None,
    resources: str | None = None,  # noqa: N803
    dateFrom: str | None = None,
    dateTo: str | None = None,  # noqa: N803
    fromDashboard: str | None = None,
) -> JSONResponse:  # noqa: N803
    headers = backend.check_api(tenant, "consolidatedDataQuery")
    query = backend.consolidated.start_consolidated(
        tenant, patient_id, conversionType, resources, dateFrom, dateTo, flag(fromDashboard), await json_body(request)
    )
    return reply(query, 200, headers)


@router.get("/patient/{patient_id}/consolidated/query")
async def consolidated_status(patient_id: str, backend: BackendDep, tenant: TenantDep) -> JSONResponse:
    backend.check_api(tenant, "consolidatedStatus")
    return reply(backend.consolidated.list_consolidated(tenant, patient_id))


@router.get("/patient/{patient_id}/consolidated/query/{request_id}")
async def consolidated_query(patient_id: str, request_id: str, backend: BackendDep, tenant: TenantDep) -> JSONResponse:
    backend.check_api(tenant, "consolidatedStatus")
    return reply(backend.consolidated.get_consolidated(tenant, patient_id, request_id))


@router.get("/patient/{patient_id}/consolidated/webhook")
async def consolidated_webhook(
    patient_id: str, backend: BackendDep, tenant: TenantDep, requestId: str | None = None
) -> JSONResponse:  # noqa: N803
    backend.check_api(tenant, "consolidatedWebhook")
    return reply(backend.consolidated.consolidated_webhook(tenant, patient_id, requestId))


@router.get("/patient/{patient_id}/consolidated/count")
async def consolidated_count(
    patient_id: str,
    backend: BackendDep,
    tenant: TenantDep,
    resources: str | None = None,
    dateFrom: str | None = None,
    dateTo: str | None = None,
) -> JSONResponse:  # noqa: N803
    backend.check_api(tenant, "consolidatedCount")
    return reply(backend.consolidated.consolidated_count(tenant, patient_id, resources, dateFrom, dateTo))


@router.get("/patient/{patient_id}/medical-record")
async def medical_record(
    patient_id: str, backend: BackendDep, tenant: TenantDep, conversionType: str | None = None
) -> JSONResponse:  # noqa: N803
    backend.check_api(tenant, "medicalRecord")
    return reply({"url": backend.consolidated.medical_record_url(tenant, patient_id, conversionType)})


@router.get("/patient/{patient_id}/medical-record-status")
async def medical_record_status(patient_id: str, backend: BackendDep, tenant: TenantDep) -> JSONResponse:
    backend.check_api(tenant, "medicalRecord")
    return reply(backend.consolidated.medical_record_status(tenant, patient_id))
