"""ASGI factory for the emulator: the Metriport API, the settings routes and the `/_sandbox` control plane."""

from __future__ import annotations

from fastapi import FastAPI

from metriport_sandbox.backend import Backend
from metriport_sandbox.config import SandboxConfig
from metriport_sandbox.control import router as control_router
from metriport_sandbox.routes import include_api


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
    include_api(app)
    app.include_router(control_router)
    return app
