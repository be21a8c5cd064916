"""A bulk document download survives one bad document: the emulator stalls a document half-way (the
client's read timeout fires), over real HTTP, and the dispatcher retries that document alone; a document
that stays unavailable is listed in the manifest, the message is retried later, and the retry fetches only
that document. Nothing is left half-written."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from metriport_flows.domain.bulk_documents import read_manifest
from metriport_flows.domain.stages import BulkDownloadReady, Outcome
from metriport_flows.store import MessageStatus, Store
from metriport_sandbox.config import SandboxConfig
from metriport_sandbox.seed import SEED_PATIENTS
from tests.metriport_flows.webhook.test_dispatch_emulator import Pipeline, documents_ready, pipeline, until

QUICK = {"document_download_attempts": 3, "document_retry_backoff_seconds": 0.05}


def served_documents(emulator) -> Counter[str]:
    """Whole downloads of each document (by id) the emulator served."""
    paths = [d["path"] for d in emulator.control.get("/_sandbox/downloads").json() if d["status"] == 200]
    return Counter(path.split("/")[5] for path in paths if path.startswith("/_sandbox/files/documents/"))


async def bulk_download(p: Pipeline, emulator, stalls: int) -> tuple[str, str, str]:
    """Jane's documents, one of which stalls `stalls` times; the bulk download started. (wait, run, doc)"""
    jane = await p.api.create_patient(p.facility_id, SEED_PATIENTS["jane"].demographics())
    await documents_ready(p, jane.id)
    stalled = (await p.api.list_documents(jane.id))[0].id
    assert stalled is not None
    config = {"stall_documents": {stalled: stalls}, "stall_seconds": 5}
    emulator.control.post("/_sandbox/config", json=config).raise_for_status()
    run, wait = p.wait(jane.id, "bulk_download")
    started = await p.api.start_bulk_download(jane.id, metadata={"flowRunId": run, "stage": "bulk_download"})
    p.store.set_wait_request_id(wait.id, started.request_id)
    return wait.id, run, stalled


def no_partial_files(folder: Path) -> bool:
    return not [f for f in folder.rglob("*") if f.name.endswith(".part")]


async def test_one_document_stalling_once_is_fetched_again_alone(
    emulator_server, sqlite_store: Store, tmp_path: Path
) -> None:
    emulator = emulator_server(SandboxConfig(delay=(0.0, 0.0), retry_pause_max=0.0))
    async with pipeline(emulator.base_url, emulator.api_key, sqlite_store, tmp_path, timeout=0.5, **QUICK) as p:
        wait_id, _, stalled = await bulk_download(p, emulator, stalls=1)
        result = (await p.resolved(wait_id)).result_model()
    assert isinstance(result, BulkDownloadReady) and result.outcome == Outcome.ready, result
    manifest = read_manifest(result.manifest_path)
    assert [d.status for d in manifest.documents] == ["ok"] * len(manifest.documents) == ["ok"] * 7
    served = served_documents(emulator)
    assert set(served.values()) == {1} and stalled in served, "each document fetched whole once"
    assert no_partial_files(tmp_path / "bundles")


async def test_a_document_failing_every_try_is_listed_and_only_it_is_fetched_again(
    emulator_server, sqlite_store: Store, tmp_path: Path
) -> None:
    emulator = emulator_server(SandboxConfig(delay=(0.0, 0.0), retry_pause_max=0.0))
    async with pipeline(emulator.base_url, emulator.api_key, sqlite_store, tmp_path, timeout=0.5, **QUICK) as p:
        wait_id, _, stalled = await bulk_download(p, emulator, stalls=QUICK["document_download_attempts"])
        failed = await until(
            lambda: next((m for m in p.store.list_messages(limit=50) if m.status == MessageStatus.error), None),
            30,
        )
        assert "unavailable" in (failed.last_error or ""), failed
        [manifest_path] = (tmp_path / "bundles").rglob("manifest.json")
        first = read_manifest(manifest_path)
        statuses = {d.id: d.status for d in first.documents}
        assert statuses.pop(stalled).startswith("unavailable: ReadTimeout"), first
        assert set(statuses.values()) == {"ok"} and "http" not in manifest_path.read_text()
        files_after_failure = {f: f.stat().st_mtime_ns for f in manifest_path.parent.iterdir()}
        assert no_partial_files(manifest_path.parent)
        result = (await p.resolved(wait_id)).result_model()
    assert isinstance(result, BulkDownloadReady) and result.outcome == Outcome.ready, result
    assert served_documents(emulator) == Counter({d.id: 1 for d in first.documents}), "the retry fetched one"
    for path, mtime in files_after_failure.items():
        if path.name != "manifest.json" and stalled not in path.name:
            assert path.stat().st_mtime_ns == mtime, f"{path.name} was written again"
    assert no_partial_files(tmp_path / "bundles")
