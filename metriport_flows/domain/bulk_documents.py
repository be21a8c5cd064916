"""Download a patient's documents from Metriport's presigned URLs, and describe them in a manifest.

The bulk-download message's URLs live 10 minutes (the single download URL 3), so the dispatcher fetches
every document at once: streamed to disk (files 0600, folders 0700), a few at a time, each hashed and
its size checked against what the message announced. The manifest is what a flow run gets to see:
ids, paths, sizes, sha256 and mime types. It holds no file names (Metriport's contain patient names,
e.g. `JaneSmith.xml`), no URLs and no contents; files are named by document id.

One bad document never costs the others: a network failure (a read timeout half-way) is retried per
document; what still fails is `unavailable` in the manifest, and the message is retried later, which
fetches only what the earlier manifest does not already hold intact. An unexpected error cancels the
downloads still running (their partial files are removed), so nothing writes after the handler gave up.

Requires nothing but a `MedicalApi`-like object with `download(url, dest)`; no Prefect.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import os
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import httpx
from pydantic import BaseModel, Field
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from metriport_flows.client.errors import MetriportError, UrlExpired
from metriport_flows.client.models import Downloaded
from metriport_flows.domain.file_names import file_name, inside, private_folder

DEFAULT_CONCURRENCY = 4
UNAVAILABLE = "unavailable"


class Downloader(Protocol):
    async def download(self, url: str, dest: Path) -> Downloaded: ...


class DocumentSource(BaseModel):
    """One document to fetch, as a message (or GET /document/download-url) announced it."""

    id: str
    url: str | None = None
    mime_type: str | None = None
    size: int | None = None
    extension: str = ""


class ManifestEntry(BaseModel):
    id: str
    status: str = Field(
        description="ok, expired (URL refused), size-mismatch, missing-url, unavailable (network, retried) or error"
    )
    path: str | None = None
    size: int | None = None
    expected_size: int | None = None
    sha256: str | None = None
    mime_type: str | None = None


class Manifest(BaseModel):
    patient_id: str
    request_id: str | None = None
    message_id: str | None = None
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    documents: list[ManifestEntry] = Field(default_factory=list)

    @property
    def downloaded(self) -> int:
        return sum(1 for d in self.documents if d.path is not None)

    @property
    def failed(self) -> int:
        return sum(1 for d in self.documents if d.status != "ok")

    @property
    def unavailable(self) -> int:
        return sum(1 for d in self.documents if d.status.startswith(UNAVAILABLE))

    @property
    def expired(self) -> int:
        return sum(1 for d in self.documents if d.status == "expired")

    @property
    def total_bytes(self) -> int:
        return sum(d.size or 0 for d in self.documents)


def extension_for(file_name: str | None, mime_type: str | None) -> str:
    """`.xml`, `.pdf`, ... from the file name's suffix, else from the mime type; never the name itself."""
    suffix = Path(file_name or "").suffix.lower()
    if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix):
        return suffix
    return (mimetypes.guess_extension(mime_type or "") or "") if mime_type else ""


def documents_dir(bundle_dir: Path, patient_id: str, request_id: str) -> Path:
    """`{bundle_dir}/{patient_id}/documents/{request_id}` (ids mapped by `file_name`), created 0700."""
    return private_folder(inside(bundle_dir, file_name(patient_id), "documents", file_name(request_id)))


class Retries(BaseModel):
    attempts: int = 3
    backoff_seconds: float = 1.0


async def _fetch(
    api: Downloader, source: DocumentSource, folder: Path, gate: asyncio.Semaphore, retries: Retries
) -> ManifestEntry:
    entry = ManifestEntry(id=source.id, expected_size=source.size, mime_type=source.mime_type, status="ok")
    if not source.url:
        entry.status = "missing-url"
        return entry
    try:
        dest = inside(folder, file_name(source.id, source.extension))
    except ValueError as exc:
        entry.status = f"error: {type(exc).__name__}"
        return entry
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(httpx.TransportError),
        stop=stop_after_attempt(retries.attempts),
        wait=wait_exponential(multiplier=retries.backoff_seconds, max=30),
        reraise=True,
    )
    async with gate:
        try:
            downloaded: Downloaded = await retrying(api.download, source.url, dest)
        except UrlExpired:
            entry.status = "expired"
            return entry
        except httpx.TransportError as exc:
            entry.status = f"{UNAVAILABLE}: {type(exc).__name__}"
            return entry
        except (MetriportError, OSError) as exc:
            entry.status = f"error: {type(exc).__name__}"
            return entry
    entry.path, entry.size, entry.sha256 = str(downloaded.path), downloaded.size, downloaded.sha256
    entry.mime_type = source.mime_type or downloaded.content_type
    if source.size is not None and source.size != downloaded.size:
        entry.status = "size-mismatch"
    return entry


def _kept(earlier: ManifestEntry | None, source: DocumentSource) -> bool:
    """An earlier attempt stored this document intact: its file is there, as large as it was then."""
    if earlier is None or earlier.status != "ok" or earlier.path is None or earlier.sha256 is None:
        return False
    path = Path(earlier.path)
    if not path.is_file() or path.stat().st_size != earlier.size:
        return False
    return source.size is None or source.size == earlier.size


async def download_documents(
    api: Downloader,
    sources: Sequence[DocumentSource],
    folder: Path,
    concurrency: int = DEFAULT_CONCURRENCY,
    retries: Retries | None = None,
) -> list[ManifestEntry]:
    """Fetch every document not already kept by the folder's earlier manifest, at most `concurrency` at a
    time; one manifest entry each, in order. An unexpected error cancels the rest (TaskGroup)."""
    gate = asyncio.Semaphore(max(1, concurrency))
    earlier = _earlier_entries(folder)
    async with asyncio.TaskGroup() as group:
        tasks = {
            n: group.create_task(_fetch(api, source, folder, gate, retries or Retries()))
            for n, source in enumerate(sources)
            if not _kept(earlier.get(source.id), source)
        }
    return [tasks[n].result() if n in tasks else earlier[source.id] for n, source in enumerate(sources)]


def _earlier_entries(folder: Path) -> dict[str, ManifestEntry]:
    path = folder / "manifest.json"
    if not path.is_file():
        return {}
    try:
        return {entry.id: entry for entry in read_manifest(path).documents}
    except ValueError:  # a manifest we cannot read is no reason to keep anything
        return {}


def write_manifest(manifest: Manifest, folder: Path) -> Path:
    """`manifest.json` beside the documents, mode 0600, replaced atomically."""
    path = folder / "manifest.json"
    part = folder / f".manifest.{os.getpid()}.part"
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(manifest.model_dump(mode="json"), file, indent=2)
    os.replace(part, path)
    return path


def read_manifest(path: str | Path) -> Manifest:
    return Manifest.model_validate_json(Path(path).read_text(encoding="utf-8"))


def manifest_markdown(manifest: Manifest) -> str:
    """The run's artifact: counts and one line per document (id, status, size, type, sha256 prefix)."""
    lines = [
        f"# Documents of patient {manifest.patient_id}",
        "",
        f"request {manifest.request_id or '-'} · {len(manifest.documents)} document(s) · "
        f"{manifest.downloaded} downloaded · {manifest.failed} problem(s) · {manifest.total_bytes} bytes",
        "",
        "| document | status | bytes | type | sha256 |",
        "|---|---|---|---|---|",
    ]
    for d in manifest.documents:
        lines.append(
            f"| {d.id} | {d.status} | {d.size if d.size is not None else ''} | {d.mime_type or ''} "
            f"| {(d.sha256 or '')[:12]} |"
        )
    return "\n".join(lines) + "\n"
