"""The control plane under `/_sandbox` (no API key): reset, faults, run-time config, what was delivered
and downloaded, the big-bundle knob, notifications, bulk completion, waiting for idle, and the files
behind the signed URLs (S3-style 403 XML when expired or tampered)."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from metriport_sandbox import files
from metriport_sandbox.config import check_delay, parse_delay
from metriport_sandbox.deps import BackendDep, json_body
from metriport_sandbox.errors import bad_request
from metriport_sandbox.faults import FaultScenario
from metriport_sandbox.signed_urls import UrlDenied, s3_error_xml

router = APIRouter(prefix="/_sandbox")


@router.post("/reset")
async def reset(backend: BackendDep) -> dict:
    backend.reset()
    return {"reset": True}


@router.get("/faults")
async def get_faults(backend: BackendDep) -> dict:
    return backend.faults.as_dict()


@router.post("/faults")
async def set_faults(request: Request, backend: BackendDep) -> dict:
    """Body `{"spec": "drop=0.5,..."}` or `{"drop": 0.5, "stuck_patients": [...]}`; replaces the scenario."""
    body = await json_body(request) or {}
    try:
        scenario = FaultScenario.parse(body.get("spec", ""), backend.config.seed)
        for name, value in body.items():
            if name != "spec":
                scenario.set(name, value)
    except (ValueError, TypeError) as exc:
        raise bad_request(str(exc)) from None
    backend.set_faults(scenario)
    return scenario.as_dict()


@router.post("/config")
async def set_config(request: Request, backend: BackendDep) -> dict:
    body = await json_body(request) or {}
    config = backend.config
    try:
        if "delay" in body:
            delay = body["delay"]
            config.delay = (
                parse_delay(delay) if isinstance(delay, str) else check_delay((float(delay[0]), float(delay[1])))
            )
        if body.get("mode") in ("sandbox", "production"):
            config.mode = body["mode"]
        if "url_lifetimes" in body:
            config.url_lifetimes.update({k: int(v) for k, v in body["url_lifetimes"].items()})
        if "rate_limits" in body:
            backend.limiter.limits.update({k: int(v) for k, v in body["rate_limits"].items()})
        if "rate_limit_window" in body:
            backend.limiter.window_seconds = float(body["rate_limit_window"])
        if "patient_limit" in body:
            config.patient_limit = int(body["patient_limit"])
        if "stall_documents" in body:
            config.stall_documents = {str(k): int(v) for k, v in body["stall_documents"].items()}
        if "stall_seconds" in body:
            config.stall_seconds = float(body["stall_seconds"])
        if "hold_document_queries" in body:
            released = backend.document_queries_released
            released.clear() if body["hold_document_queries"] else released.set()
    except (ValueError, TypeError, AttributeError, IndexError) as exc:
        raise bad_request(str(exc)) from None
    return {
        **config.model_dump(mode="json", exclude={"url_secret"}),
        "rate_limits": backend.limiter.limits,
        "hold_document_queries": not backend.document_queries_released.is_set(),
    }


@router.get("/deliveries")
async def deliveries(
    backend: BackendDep,
    type: str | None = None,
    patient_id: str | None = None,  # noqa: A002
    request_id: str | None = None,
) -> list[dict[str, Any]]:
    rows = backend.sender.deliveries
    return [
        d
        for d in rows
        if (type is None or d["type"] == type)
        and (patient_id is None or d["patient_id"] == patient_id)
        and (request_id is None or d["request_id"] == request_id)
    ]


@router.get("/webhook-requests")
async def webhook_requests(backend: BackendDep, tenant: str | None = None) -> list[dict[str, Any]]:
    return [r.summary() for t in backend.tenants.values() if tenant in (None, t.id) for r in t.webhooks]


@router.get("/api-calls")
async def api_calls(backend: BackendDep, tenant: str | None = None) -> dict[str, int]:
    """How many calls each API operation got (e.g. `documentQuery`: every POST /document/query)."""
    return backend.api_calls(tenant)


@router.get("/rate-limits")
async def rate_limits(backend: BackendDep) -> dict[str, dict[str, object]]:
    """What the rate limiter admitted (epoch times) and refused, per operation, since the last reset."""
    return backend.limiter.record()


@router.get("/document-query-posts")
async def document_query_posts(backend: BackendDep) -> dict[str, int]:
    """Accepted POST /document/query calls per patient id (a flow run must make one per patient)."""
    return {
        patient.id: patient.dq_posts
        for tenant in backend.tenants.values()
        for patient in tenant.patients.values()
        if patient.dq_posts
    }


@router.get("/downloads")
async def downloads(backend: BackendDep) -> list[dict[str, Any]]:
    return backend.downloads


@router.post("/patients/{patient_id}/bundle-size")
async def bundle_size(patient_id: str, request: Request, backend: BackendDep) -> dict:
    body = await json_body(request) or {}
    found = backend.find_patient(patient_id)
    if found is None:
        return JSONResponse({"detail": "patient not found"}, status_code=404)
    size = body.get("bytes")
    found[1].bundle_size = int(size) if size else None
    return {"patientId": patient_id, "bytes": found[1].bundle_size}


@router.post("/notifications")
async def notification(request: Request, backend: BackendDep) -> dict:
    body = await json_body(request) or {}
    return backend.bulk.send_notification(
        str(body.get("patientId", "")),
        str(body.get("type", "")),
        body.get("admitTimestamp"),
        body.get("dischargeTimestamp"),
    )


@router.post("/bulk-patient-create/{request_id}/complete")
async def complete_bulk(request_id: str, backend: BackendDep) -> dict:
    tenant, job = backend.bulk.find_bulk_import(request_id)
    return backend.bulk.complete_bulk_import(tenant, job)


@router.api_route("/flush", methods=["POST"])
@router.api_route("/idle", methods=["GET"])
async def idle(backend: BackendDep, timeout: float = 60.0) -> dict:
    """Return once no background job or webhook send is pending (a stuck query is not pending)."""
    done = await backend.idle(timeout)
    return {"idle": done, "pending": backend.pending}


@router.get("/files/{path:path}")
async def get_file(request: Request, backend: BackendDep) -> Response:
    path = request.url.path
    try:
        backend.signer.verify(path, request.query_params)
        file = files.resolve(backend, path)
    except UrlDenied as denied:
        files.record(backend, path, files.resolve_or_none(backend, path), 403)
        return Response(denied.xml(path), status_code=403, media_type="application/xml")
    except files.FileMissing:
        files.record(backend, path, None, 404)
        body = s3_error_xml("NoSuchKey", "The specified key does not exist.", path)
        return Response(body, status_code=404, media_type="application/xml")
    if file.chunks is not None:
        return StreamingResponse(files.recorded_stream(backend, path, file), media_type=file.media_type)
    assert file.body is not None
    if files.stalls(backend, path):
        return StreamingResponse(files.stalled(backend, path, file), media_type=file.media_type)
    files.record(backend, path, file, 200, hashlib.sha256(file.body).hexdigest(), len(file.body))
    return Response(file.body, media_type=file.media_type)


@router.put("/files/{path:path}")
async def put_file(request: Request, backend: BackendDep) -> Response:
    path = request.url.path
    try:
        backend.signer.verify(path, request.query_params)
        files.bulk_upload(backend, path, await request.body())
    except UrlDenied as denied:
        return Response(denied.xml(path), status_code=403, media_type="application/xml")
    except files.FileMissing:
        return Response(
            s3_error_xml("NoSuchKey", "The specified key does not exist.", path),
            status_code=404,
            media_type="application/xml",
        )
    return Response(status_code=200)
