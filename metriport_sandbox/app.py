"""ASGI factory for the emulator: the Metriport API, the settings routes and the `/_sandbox` control plane.

The routers share their dependencies through `deps.py`; this module is the only one that includes them.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from metriport_sandbox.backend import Backend
from metriport_sandbox.config import SandboxConfig
from metriport_sandbox.control import router as control_router
from metriport_sandbox.errors import ApiError
from metriport_sandbox.routes_document import router as document_router
from metriport_sandbox.routes_patient import router as patient_router
from metriport_sandbox.routes_settings import router as settings_router


def api_error_response(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return Response(exc.content(), status_code=exc.status, media_type=exc.media_type, headers=exc.headers)


def create_app(config: SandboxConfig | None = None) -> FastAPI:
    config = config or SandboxConfig()
    app = FastAPI(
        title="Metriport emulator",
        version="0.1.0",
        docs_url="/_sandbox/docs",
        openapi_url="/_sandbox/openapi.json",
        redoc_url=None,
    )
    app.state.backend = Backend(config)
    app.state.config = config
    medical = APIRouter(prefix="/medical/v1")
    medical.include_router(patient_router)
    medical.include_router(document_router)
    app.include_router(medical)
    app.include_router(settings_router)
    app.include_router(control_router)
    app.add_exception_handler(ApiError, api_error_response)
    return app
