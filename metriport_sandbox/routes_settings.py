"""Settings routes at the root (`/settings...`, not under /medical/v1)."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import JSONResponse, Response

from metriport_sandbox.deps import BackendDep, TenantDep, json_body, reply
from metriport_sandbox.errors import invalid_params, not_found

router = APIRouter()


@router.get("/settings")
async def get_settings(backend: BackendDep, tenant: TenantDep) -> JSONResponse:
    backend.check_api(tenant, "settings")
    return reply(backend.get_settings(tenant))


@router.post("/settings")
async def update_settings(
    request: Request, background: BackgroundTasks, backend: BackendDep, tenant: TenantDep
) -> JSONResponse:
    """The ping goes out after the response has been sent."""
    backend.check_api(tenant, "settings")
    body = await json_body(request)
    settings = backend.update_settings(tenant, body)
    if body.get("webhookUrl"):
        background.add_task(backend.schedule_ping, tenant)
    return JSONResponse(settings, background=background)


@router.get("/settings/webhook")
async def webhook_status(backend: BackendDep, tenant: TenantDep) -> JSONResponse:
    backend.check_api(tenant, "webhookStatus")
    return reply(backend.webhook_status(tenant))


@router.post("/settings/webhook/retry")
async def retry_webhooks(backend: BackendDep, tenant: TenantDep) -> Response:
    backend.check_api(tenant, "webhookRetry")
    backend.retry_webhooks(tenant)
    return Response(status_code=200)


@router.post("/settings/webhook/sample-payload")
async def sample_payload(request: Request, backend: BackendDep, tenant: TenantDep) -> JSONResponse:
    """Sandbox only (Metriport refuses it in production): send any body with `meta.type` to the webhook."""
    backend.check_api(tenant, "settings")
    if backend.config.mode == "production":
        raise not_found("Not available in production")
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("meta"), dict) or not body["meta"].get("type"):
        raise invalid_params([("Required", "meta,type")])
    return reply(await backend.sender.send_sample(backend.tenant(tenant), body))
