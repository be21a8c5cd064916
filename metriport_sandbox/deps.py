"""What every router of the emulator shares: the backend and the tenant (API-key auth) as route
dependencies, JSON bodies and replies. Routers import this module; `app.py` includes the routers; nothing
here imports a router or the app. Routes parse, call the backend, serialize."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from metriport_sandbox.backend import Backend
from metriport_sandbox.errors import forbidden, invalid_params

API_KEY_HEADER = "x-api-key"


def get_backend(request: Request) -> Backend:
    return request.app.state.backend


def tenant_from_key(api_key: str | None) -> str:
    """Metriport's cxId rule: the key is base64 of "a:b" and b (the tenant) has at least 5 characters."""
    if not api_key:
        raise forbidden()
    try:
        decoded = base64.b64decode(api_key, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise forbidden() from None
    parts = decoded.split(":")
    if len(parts) != 2 or len(parts[1]) < 5:
        raise forbidden()
    return parts[1]


def require_tenant(request: Request) -> str:
    return tenant_from_key(request.headers.get(API_KEY_HEADER))


BackendDep = Annotated[Backend, Depends(get_backend)]
TenantDep = Annotated[str, Depends(require_tenant)]


async def json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise invalid_params([("Invalid JSON body", "")]) from None


def reply(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(content, status_code=status, headers=headers or {})


def flag(value: str | None) -> bool:
    return str(value).lower() == "true"
