"""Every error body shape docs/metriport.md §9 lists maps to its typed exception."""

from __future__ import annotations

import httpx
import pytest

from metriport_flows.client.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Locked,
    MetriportError,
    NotFound,
    PatientLimitReached,
    RateLimited,
    ServerError,
    UrlExpired,
    error_from_response,
    url_expired,
)

ZOD = {
    "status": 400,
    "name": "BAD_REQUEST",
    "title": "Missing or invalid parameters",
    "detail": "Invalid date, on [dob], Required, on [address, 0, zip]",
}


def response(status: int, **kwargs: object) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("GET", "http://m.test/x"), **kwargs)


def test_rfc7807_zod_body() -> None:
    error = error_from_response(response(400, json=ZOD))
    assert type(error) is BadRequest
    assert (error.status, error.title, error.name) == (400, "Missing or invalid parameters", "BAD_REQUEST")
    assert "on [dob]" in error.detail and error.body == ZOD
    assert str(error).startswith("400 Missing or invalid parameters: Invalid date")


def test_sandbox_patient_limit_is_its_own_bad_request() -> None:
    body = {"message": "Cannot create more than 20 patients in Sandbox mode!"}
    error = error_from_response(response(400, json=body))
    assert isinstance(error, PatientLimitReached) and isinstance(error, BadRequest)
    assert error.detail == body["message"]


def test_locked_json_string_body() -> None:
    error = error_from_response(response(423, json="Document querying currently in progress"))
    assert isinstance(error, Locked) and error.detail == "Document querying currently in progress"
    assert error.title == "Locked"


def test_rate_limit_plain_text_with_retry_after() -> None:
    text = "Too many patient document query starts, please try again later."
    error = error_from_response(response(429, text=text, headers={"Retry-After": "7"}))
    assert isinstance(error, RateLimited) and error.retry_after == 7.0 and error.detail == text
    assert error_from_response(response(429, text="x")).retry_after is None


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (403, Forbidden),
        (404, NotFound),
        (409, Conflict),
        (412, Conflict),
        (500, ServerError),
        (503, ServerError),
        (418, MetriportError),
    ],
)
def test_status_classes(status: int, cls: type[MetriportError]) -> None:
    error = error_from_response(response(status, json={"status": status, "title": "t", "detail": "d"}))
    assert type(error) is cls and error.status == status and error.detail == "d"


def test_expired_s3_url_reads_the_xml_code() -> None:
    xml = (
        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
        b"<Message>Request has expired</Message><Resource>/b/k</Resource></Error>"
    )
    error = url_expired(response(403, content=xml, headers={"content-type": "application/xml"}))
    assert isinstance(error, UrlExpired) and isinstance(error, Forbidden)
    assert (error.code, error.detail, error.status) == ("AccessDenied", "Request has expired", 403)
    unknown = url_expired(response(403, text="denied"))
    assert unknown.code is None and unknown.detail == "denied"
