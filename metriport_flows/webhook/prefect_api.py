"""Whether a Prefect API is configured: without PREFECT_API_URL, Prefect quietly starts a temporary
local server in a subprocess (which can outlive the process that started it). The product never lets
that happen: each entry point that talks to Prefect checks here first and says what is missing.
And the client the product's own calls use: a busy server's 503 goes to the caller at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient


class PrefectApiMissing(RuntimeError):
    """PREFECT_API_URL is not set; the message says what needs it."""


def configured_api_url() -> str | None:
    """PREFECT_API_URL as Prefect reads it (environment, profile or .env), or None."""
    from prefect.settings import PREFECT_API_URL

    value = PREFECT_API_URL.value()
    return str(value) if value else None


def require_api_url(needed_by: str) -> str:
    """PREFECT_API_URL, or a `PrefectApiMissing` naming who needs it (never a temporary server)."""
    url = configured_api_url()
    if url is None:
        raise PrefectApiMissing(
            f"PREFECT_API_URL is not set: {needed_by} needs a Prefect server "
            "(e.g. export PREFECT_API_URL=http://127.0.0.1:4200/api)"
        )
    return url


async def _raise_when_busy(response: httpx.Response) -> None:
    """A 503 raises inside httpx's send, before the Prefect client's own wait-and-retry sees it."""
    if response.status_code == httpx.codes.SERVICE_UNAVAILABLE:
        await response.aread()
        response.raise_for_status()


def prefect_client() -> PrefectClient:
    """A Prefect client that hands a busy server's 503 straight to the caller (whose own retries must
    treat it as transient: `is_transient`), instead of sleeping 2 s, 4, 8... first."""
    from prefect.client.orchestration import get_client

    return get_client(httpx_settings={"event_hooks": {"response": [_raise_when_busy]}})
