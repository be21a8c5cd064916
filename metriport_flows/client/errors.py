"""Typed errors for the Medical API.

Metriport answers errors with RFC 7807 bodies `{status, name, title, detail}`, except: the sandbox patient
limit (`{message}`), PUT /patient during a document query (423 with a bare JSON string), rate limiting
(429, plain text) and presigned S3 URLs (403 with an XML body). `error_from_response` maps all of them, so
callers catch a class instead of parsing bodies.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from metriport_flows.client.log_hygiene import redact_urls

SANDBOX_LIMIT_MARKER = "patients in Sandbox mode"


class MetriportError(Exception):
    """An error answer from Metriport (or a request refused before sending, with status None)."""

    def __init__(
        self,
        status: int | None,
        title: str | None = None,
        detail: str | None = None,
        name: str | None = None,
        body: Any = None,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = redact_urls(detail) if detail else detail
        self.name = name
        self.body = body
        super().__init__(self._text())

    def _text(self) -> str:
        parts = [str(self.status) if self.status is not None else "", self.title or "", self.detail or ""]
        return " ".join(p for p in parts[:2] if p) + (f": {parts[2]}" if parts[2] else "")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, title={self.title!r}, detail={self.detail!r})"


class BadRequest(MetriportError):
    """400, usually a Zod validation error: `detail` lists `"<msg>, on [<path>]"` items."""


class PatientLimitReached(BadRequest):
    """400 `{message: "Cannot create more than 20 patients in Sandbox mode!"}`."""


class Forbidden(MetriportError):
    """403: bad or missing API key, or a file name outside this account."""


class NotFound(MetriportError):
    """404."""


class Conflict(MetriportError):
    """409 or 412 (eTag mismatch)."""


class Locked(MetriportError):
    """423: the patient cannot change while a document query is processing."""


class RateLimited(MetriportError):
    """429 after the transport's retries ran out; `retry_after` seconds when the server said so."""

    def __init__(self, *args: Any, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(*args, **kwargs)


class ServerError(MetriportError):
    """5xx after the transport's retries ran out."""


class UrlExpired(Forbidden):
    """A presigned URL was refused (403): expired ("AccessDenied") or tampered ("SignatureDoesNotMatch").

    Ask Metriport for a fresh URL; re-downloading the same one cannot succeed.
    """

    def __init__(self, code: str | None, message: str | None, body: Any = None) -> None:
        self.code = code
        super().__init__(403, code or "AccessDenied", message, "URL_EXPIRED", body)


class NotAFile(MetriportError):
    """A download answered something other than 200: a redirect (never followed, so no request goes
    where an answer points), a partial or empty answer. The URL is not repeated (it is signed)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason or None, "a download must answer 200; redirects are not followed", "NOT_A_FILE")


class InvalidMetadata(MetriportError, ValueError):
    """Request metadata Metriport would refuse; raised before anything is sent."""

    def __init__(self, detail: str) -> None:
        super().__init__(None, "Invalid metadata", detail, "INVALID_METADATA")


_BY_STATUS: dict[int, type[MetriportError]] = {
    400: BadRequest,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    412: Conflict,
    423: Locked,
    429: RateLimited,
}


# Answers worth another try, from Metriport or from a busy Prefect server (the embedded one answers 503).
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


def is_transient(exc: BaseException) -> bool:
    """A rate limit, a server error or a connection error: the same call may succeed later."""
    if isinstance(exc, (RateLimited, ServerError, httpx.TransportError)):
        return True
    return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code in TRANSIENT_STATUSES


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return response.text


def error_from_response(response: httpx.Response) -> MetriportError:
    """The typed error for a non-2xx Medical API response (its body must already be read)."""
    status = response.status_code
    body = _body(response)
    title = detail = name = None
    if isinstance(body, dict):
        title = _str(body.get("title"))
        detail = _str(body.get("detail")) or _str(body.get("message"))
        name = _str(body.get("name"))
    elif isinstance(body, str):
        detail = body.strip() or None
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else MetriportError)
    if status == 400 and detail and SANDBOX_LIMIT_MARKER in detail:
        cls = PatientLimitReached
    title = title or response.reason_phrase or None
    if cls is RateLimited:
        return RateLimited(status, title, detail, name, body, retry_after=_retry_after(response))
    return cls(status, title, detail, name, body)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def s3_error(body: bytes) -> tuple[str | None, str | None]:
    """(Code, Message) of an S3-style XML error body, (None, None) when it has none."""
    text = body.decode("utf-8", "replace")
    code = re.search(r"<Code>([^<]*)</Code>", text)
    message = re.search(r"<Message>([^<]*)</Message>", text)
    return (code.group(1) if code else None, message.group(1) if message else None)


def url_expired(response: httpx.Response) -> UrlExpired:
    code, message = s3_error(response.content)
    if code is None:
        body = _body(response)
        message = body if isinstance(body, str) else json.dumps(body)
    return UrlExpired(code, message, response.content)
