"""Files that hold PHI are 0600 in 0700 folders whatever the umask: the inbox database with its -wal and
-shm, bundles, documents, manifests, notification bundles and bulk result CSVs."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from metriport_flows.client.api import MedicalApi
from metriport_flows.domain.bulk_documents import Manifest, documents_dir, write_manifest
from metriport_flows.store import Store
from metriport_flows.webhook.handlers.bulk import result_csv_path
from metriport_flows.webhook.handlers.consolidated import bundle_path
from metriport_flows.webhook.handlers.notifications import notification_path


@pytest.fixture(params=[0o022, 0o000], ids=["umask-022", "umask-000"])
def permissive_umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_inbox_database_and_its_wal_and_shm_are_private(tmp_path: Path, permissive_umask: int) -> None:
    database = tmp_path / "data" / "inbox.db"
    store = Store(f"sqlite:///{database}")
    try:
        store.migrate()
        store.insert_message(message_id="m-1", type="medical.document-download", body=b"{}")
        files = {path.name: _mode(path) for path in database.parent.iterdir()}
        assert files == {"inbox.db": 0o600, "inbox.db-wal": 0o600, "inbox.db-shm": 0o600}
        assert _mode(database.parent) == 0o700
    finally:
        store.dispose()


async def _file(request: Request) -> Response:
    return Response(b"PHI", media_type="application/octet-stream")


@pytest.fixture
def api() -> Iterator[MedicalApi]:
    app = Starlette(routes=[Route("/f", _file)])
    yield MedicalApi("http://files.test", "key", transport=httpx.ASGITransport(app=app))


async def test_bundles_documents_manifests_and_csvs_are_private(
    tmp_path: Path, permissive_umask: int, api: MedicalApi
) -> None:
    root = tmp_path / "bundles"
    targets = [
        bundle_path(root, "pat-1", "req-1", "json"),
        documents_dir(root, "pat-1", "req-2") / "doc-1.xml",
        notification_path(root, "pat-1", "msg-1"),
        result_csv_path(root, "job-1"),
    ]
    async with api:
        for target in targets:
            await api.download("http://files.test/f", target)
    write_manifest(Manifest(patient_id="pat-1"), targets[1].parent)
    for path in root.rglob("*"):
        assert _mode(path) == (0o700 if path.is_dir() else 0o600), path
    assert _mode(root) == 0o700
    assert len([p for p in root.rglob("*") if p.is_file()]) == 5
