"""The files behind the signed URLs (`/_sandbox/files/...`), built on demand from the emulator's state.

Kinds: documents (seed bytes, or an XML rendered to html/pdf), consolidated (json, gzip, pdf, html; a
patient with the big-bundle knob streams its json/gzip instead of holding it), bulk-create (the upload
target and the result CSV) and notifications. Every GET is recorded for `GET /_sandbox/downloads`.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from metriport_sandbox.backend import Backend

MEDIA = {
    "json": "application/json",
    "gz": "application/gzip",
    "pdf": "application/pdf",
    "html": "text/html",
    "csv": "text/csv",
    "xml": "application/xml",
    "jpeg": "image/jpeg",
    "tif": "image/tiff",
}


class FileMissing(Exception):
    """No such file: S3 answers 404 NoSuchKey."""


@dataclass
class SandboxFile:
    kind: str
    tenant_id: str
    patient_id: str | None
    request_id: str | None
    media_type: str
    body: bytes | None = None
    chunks: Iterator[bytes] | None = field(default=None, repr=False)


def _gzip_stream(chunks: Iterator[bytes]) -> Iterator[bytes]:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    for chunk in chunks:
        out = compressor.compress(chunk)
        if out:
            yield out
    yield compressor.flush()


def resolve(backend: "Backend", path: str) -> SandboxFile:
    """Map `/_sandbox/files/<kind>/<tenant>/...` to its content."""
    parts = path.removeprefix("/_sandbox/files/").split("/")
    if len(parts) < 3 or parts[1] not in backend.tenants:
        raise FileMissing(path)
    kind, tenant = parts[0], backend.tenants[parts[1]]
    if kind == "documents" and len(parts) == 4:
        return _document(backend, tenant, parts[2], parts[3])
    if kind == "consolidated" and len(parts) == 4:
        return _consolidated(backend, tenant, parts[2], parts[3])
    if kind == "bulk-create" and len(parts) == 4 and parts[3] == "result.csv":
        job = tenant.bulk_imports.get(parts[2])
        if job is None or job.result_csv is None:
            raise FileMissing(path)
        return SandboxFile("bulk-result", tenant.id, None, job.request_id, "text/csv", job.result_csv)
    if kind == "medical-record" and len(parts) == 4 and parts[3] in ("summary.html", "summary.pdf"):
        patient = tenant.patients.get(parts[2])
        if patient is None or not patient.resources:
            raise FileMissing(path)
        from metriport_sandbox.render import render_html, render_pdf

        ext = parts[3].rsplit(".", 1)[-1]
        body = (render_html if ext == "html" else render_pdf)(patient.resources)
        return SandboxFile("medical-record", tenant.id, patient.id, None, MEDIA[ext], body)
    if kind == "notifications" and len(parts) == 4:
        request_id = parts[3].removesuffix(".json")
        resources = tenant.notification_bundles.get(request_id)
        if resources is None:
            raise FileMissing(path)
        from metriport_sandbox.fhir_data import bundle_json

        return SandboxFile("notification", tenant.id, parts[2], request_id, "application/json", bundle_json(resources))
    raise FileMissing(path)


def resolve_or_none(backend: "Backend", path: str) -> SandboxFile | None:
    """The file a refused URL names, so the download log says whose file was refused."""
    try:
        return resolve(backend, path)
    except FileMissing:
        return None


def _document(backend: "Backend", tenant, doc_id: str, name: str) -> SandboxFile:
    from metriport_sandbox.documents import document_bytes

    for patient in tenant.patients.values():
        doc = patient.stored_documents.get(doc_id)
        if doc is None:
            continue
        ext = name.rsplit(".", 1)[-1]
        if doc.seed_file.rsplit(".", 1)[-1] != ext and ext in ("html", "pdf"):
            from metriport_sandbox.render import render_html, render_pdf

            render = render_html if ext == "html" else render_pdf
            body = render(patient.resources or [])
            return SandboxFile("document", tenant.id, patient.id, doc.request_id, MEDIA[ext], body)
        return SandboxFile(
            "document",
            tenant.id,
            patient.id,
            doc.request_id,
            doc.mime_type,
            document_bytes(doc.seed_file, doc.seed_key),
        )
    raise FileMissing(doc_id)


def _consolidated(backend: "Backend", tenant, patient_id: str, name: str) -> SandboxFile:
    from metriport_sandbox.fhir_data import bundle_json

    request_id, _, ext = name.partition(".")
    result = tenant.consolidated_results.get(request_id)
    patient = tenant.patients.get(patient_id)
    if result is None or result.resources is None or result.patient_id != patient_id:
        raise FileMissing(name)
    base = SandboxFile("consolidated", tenant.id, patient_id, request_id, "application/json")
    big = patient.bundle_size if patient is not None else None
    if ext in ("json", "json.gz") and big:
        from metriport_sandbox.bigbundle import stream_bundle

        chunks = stream_bundle(result.resources, big)
        if ext == "json.gz":
            base.media_type, base.chunks = "application/gzip", _gzip_stream(chunks)
        else:
            base.chunks = chunks
        return base
    if ext == "json":
        base.body = bundle_json(result.resources)
    elif ext == "json.gz":
        base.media_type, base.body = "application/gzip", gzip.compress(bundle_json(result.resources), mtime=0)
    elif ext in ("pdf", "html"):
        from metriport_sandbox.render import render_html, render_pdf

        base.media_type = MEDIA[ext]
        base.body = (render_html if ext == "html" else render_pdf)(result.resources)
    else:
        raise FileMissing(name)
    return base


def record(
    backend: "Backend",
    path: str,
    file: SandboxFile | None,
    status: int,
    sha256: str | None = None,
    size: int | None = None,
) -> None:
    segments = path.split("/")
    backend.downloads.append(
        {
            "seq": len(backend.downloads),
            "path": path,
            "kind": file.kind if file else (segments[3] if len(segments) > 3 else "unknown"),
            "tenant_id": file.tenant_id if file else None,
            "patient_id": file.patient_id if file else None,
            "request_id": file.request_id if file else None,
            "sha256": sha256,
            "size": size,
            "status": status,
        }
    )


def recorded_stream(backend: "Backend", path: str, file: SandboxFile) -> Iterator[bytes]:
    """Stream chunks and record the download (hash and size) once the last chunk went out."""
    digest, size = hashlib.sha256(), 0
    assert file.chunks is not None
    for chunk in file.chunks:
        digest.update(chunk)
        size += len(chunk)
        yield chunk
    record(backend, path, file, 200, digest.hexdigest(), size)


def bulk_upload(backend: "Backend", path: str, content: bytes) -> None:
    parts = path.removeprefix("/_sandbox/files/").split("/")
    if len(parts) != 4 or parts[0] != "bulk-create" or parts[3] != "upload.csv" or parts[1] not in backend.tenants:
        raise FileMissing(path)
    tenant = backend.tenants[parts[1]]
    job = tenant.bulk_imports.get(parts[2])
    if job is None:
        raise FileMissing(path)
    backend.bulk.receive_bulk_csv(tenant, job, content)


def stalls(backend: "Backend", path: str) -> bool:
    """Whether this download of a document stalls (`stall_documents`, a test control): counts one down."""
    parts = path.removeprefix("/_sandbox/files/").split("/")
    left = backend.config.stall_documents
    if len(parts) != 4 or parts[0] != "documents" or left.get(parts[2], 0) <= 0:
        return False
    left[parts[2]] -= 1
    return True


async def stalled(backend: "Backend", path: str, file: SandboxFile) -> AsyncIterator[bytes]:
    """Half the file, then nothing for `stall_seconds` (a client's read timeout fires), then the rest."""
    body = file.body or b""
    half = len(body) // 2
    yield body[:half]
    await asyncio.sleep(backend.config.stall_seconds)
    yield body[half:]
    record(backend, path, file, 200, hashlib.sha256(body).hexdigest(), len(body))
