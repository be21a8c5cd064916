"""Typed API errors carrying the exact status and body Metriport answers with.

Most errors are RFC 7807 `{status, name, title, detail}` (name is the status name, title the error class);
a few are not (the sandbox patient limit, the 423 JSON string, the plain-text 429), so an error holds the
body and media type it must be sent with.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any


class ApiError(Exception):
    def __init__(
        self, status: int, body: Any, media_type: str = "application/json", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body
        self.media_type = media_type
        self.headers = headers or {}

    def content(self) -> bytes:
        if self.media_type == "application/json":
            return json.dumps(self.body).encode()
        return str(self.body).encode()


def problem(status: int, title: str, detail: str | None) -> ApiError:
    body: dict[str, Any] = {"status": status, "name": HTTPStatus(status).name, "title": title}
    if detail is not None:
        body["detail"] = detail
    return ApiError(status, body)


def bad_request(detail: str) -> ApiError:
    return problem(400, "BadRequestError", detail)


def not_found(detail: str) -> ApiError:
    return problem(404, "NotFoundError", detail)


def forbidden(detail: str = "Forbidden") -> ApiError:
    return problem(403, "ForbiddenError", detail)


def invalid_params(issues: list[tuple[str, str]]) -> ApiError:
    """A Zod validation failure: `"<msg>, on [<path>]"` joined with ", "."""
    detail = ", ".join(f"{message}, on [{path}]" for message, path in issues)
    return problem(400, "Missing or invalid parameters", detail)


def server_error() -> ApiError:
    return problem(500, "InternalServerError", "Please try again or reach out to support@metriport.com")
