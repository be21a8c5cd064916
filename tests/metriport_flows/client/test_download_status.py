"""A download is a 200 or a failure: a redirect's body is never stored as the file, and a redirect is
never followed (a loopback server answers 302 pointing at a real file it also serves)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from metriport_flows.client.api import MedicalApi
from metriport_flows.client.errors import NotAFile
from metriport_flows.domain.bulk_documents import DocumentSource, download_documents
from tests.fixtures.inbox import serve

FILE = b'{"resourceType":"Bundle","type":"searchset","total":0,"entry":[]}'


class Files:
    """Answers each path with its status; records every path asked for."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def answer(self, request: Request) -> Response:
        self.asked.append(request.url.path)
        name = request.path_params["name"]
        if name == "file":
            return Response(FILE, media_type="application/json")
        status = int(name)
        return Response(b"<html>moved</html>", status_code=status, headers={"location": "/file?X-Amz-Signature=s"})


@pytest.fixture
def files() -> Iterator[tuple[Files, str]]:
    served = Files()
    with serve(Starlette(routes=[Route("/{name}", served.answer)])) as base_url:
        yield served, base_url


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308, 201, 202, 204, 206])
async def test_any_answer_but_200_is_a_failed_download_and_is_not_followed(
    files: tuple[Files, str], tmp_path: Path, status: int
) -> None:
    served, base_url = files
    dest = tmp_path / "bundle.json"
    async with MedicalApi(base_url, "key") as api:
        with pytest.raises(NotAFile) as caught:
            await api.download(f"{base_url}/{status}?X-Amz-Signature=secret", dest)
    assert caught.value.status == status and "secret" not in str(caught.value)
    assert served.asked == [f"/{status}"]  # the redirect's target was never asked for
    assert list(tmp_path.iterdir()) == []  # no file, no part file


async def test_a_200_is_stored(files: tuple[Files, str], tmp_path: Path) -> None:
    _, base_url = files
    async with MedicalApi(base_url, "key") as api:
        downloaded = await api.download(f"{base_url}/file", tmp_path / "bundle.json")
    assert downloaded.path.read_bytes() == FILE


async def test_a_redirected_bulk_document_is_an_error_entry(files: tuple[Files, str], tmp_path: Path) -> None:
    _, base_url = files
    sources = [DocumentSource(id="doc-1", url=f"{base_url}/302"), DocumentSource(id="doc-2", url=f"{base_url}/file")]
    async with MedicalApi(base_url, "key", transport=httpx.AsyncHTTPTransport()) as api:
        entries = await download_documents(api, sources, tmp_path)
    assert [(e.id, e.status, e.path is None) for e in entries] == [
        ("doc-1", "error: NotAFile", True),
        ("doc-2", "ok", False),
    ]
