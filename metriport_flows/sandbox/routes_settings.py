"""Settings routes at the root (`/settings...`, not under /medical/v1)."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import JSONResponse, Response

from metriport_flows.sandbox.routes import BackendDep, TenantDep, json_body, reply

router = APIRouter()


@router.get("/settings")
async def get_settings(backend: BackendDep, tenant: TenantDep) -> JSONResponse:
    backend.check_api(tenant, "settings")
    return reply(backend.get_settings(tenant))


@router.post("/settings")
async def update_settings(request: Request, background: BackgroundTasks, backend: BackendDep,
                          tenant: TenantDep) -> JSONResponse:
    """The ping goes out after the response has been sent."""
    backend.check_api(tenant, "settings")
    settings = backend.update_settings(tenant, await json_body(request))
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
