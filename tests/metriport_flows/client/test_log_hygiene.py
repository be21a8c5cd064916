"""No signed URL in a log, an exception message or an error column."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from metriport_flows.client.api import MedicalApi
from metriport_flows.client.errors import error_from_response
from metriport_flows.client.log_hygiene import HTTP_LOGGERS, configure_process_logging, redact_urls
from metriport_flows.store import MessageStatus, Store
from tests.fixtures.inbox import serve

SIGNED = "/files/JaneSmith.xml?X-Amz-Signature=0ddba11&Signature=c0ffee&Expires=1"


@pytest.fixture
def http_logger_levels() -> Iterator[None]:
    before = {name: logging.getLogger(name).level for name in HTTP_LOGGERS}
    yield
    for name, level in before.items():
        logging.getLogger(name).setLevel(level)


async def _file(request: Request) -> Response:
    return Response(b"<ClinicalDocument/>", media_type="application/xml")


async def test_a_download_in_a_process_logging_at_debug_logs_no_signed_url(
    http_logger_levels: None, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    configure_process_logging("debug")  # what `metriport-flows receiver --log-level debug` does
    caplog.set_level(logging.DEBUG)
    with serve(Starlette(routes=[Route("/files/{name}", _file)])) as base_url:
        async with MedicalApi(base_url, "key") as api:
            await api.download(base_url + SIGNED, tmp_path / "doc.xml")
    assert (tmp_path / "doc.xml").exists()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "Signature" not in logged and "JaneSmith" not in logged


def test_an_error_answer_that_quotes_a_signed_url_is_redacted() -> None:
    request = httpx.Request("GET", "http://files.test" + SIGNED)
    response = httpx.Response(404, text=f"no such key: http://files.test{SIGNED}", request=request)
    error = error_from_response(response)
    assert "Signature" not in str(error) and "Signature" not in repr(error)
    assert "http://files.test/files/JaneSmith.xml?<redacted>" in str(error)


def test_error_columns_never_hold_a_signed_url(store: Store) -> None:
    store.insert_message(message_id="m-1", type="medical.consolidated-data", body=b"{}")
    assert [row.message_id for row in store.claim_pending(owner="test")] == ["m-1"]
    assert store.retry_message(
        "m-1",
        owner="test",
        status=MessageStatus.error,
        delay=timedelta(0),
        error=f"HTTPStatusError: for url 'http://x{SIGNED}'",
    )
    assert [row.message_id for row in store.claim_pending(owner="test")] == ["m-1"]
    assert store.finish_message("m-1", owner="test", status=MessageStatus.done, detail=f"see https://x{SIGNED}")
    row = store.get_message("m-1")
    assert row is not None and "Signature" not in (row.last_error or "") + (row.detail or "")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("url 'https://s3.test/a/b.xml?X-Amz-Signature=1'", "url 'https://s3.test/a/b.xml?<redacted>'"),
        ("(http://h:1/p?Signature=2&Expires=3) then", "(http://h:1/p?<redacted>) then"),
        ("no url here, Signature is a word", "no url here, Signature is a word"),
        ("http://h/p#frag=1 and http://h/q", "http://h/p?<redacted> and http://h/q"),
    ],
)
def test_redact_urls(text: str, expected: str) -> None:
    assert redact_urls(text) == expected
