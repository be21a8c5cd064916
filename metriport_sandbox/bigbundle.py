"""A consolidated bundle of a chosen size (up to ~1 GB), generated as a stream in constant memory.

Why: the big-bundle knob lets benchmarks and tests exercise clients on huge patients without the
emulator holding the file. The stream is one valid searchset Bundle JSON: the Patient (the "lead"
resource) once, then the patient's other resources repeated with fresh ids, each copy's references
rewritten to that copy's ids, so every reference still resolves. The last copy may be partial (a
prefix of the record, which in `fhir_data`'s order only references earlier resources), and
whitespace before the closing `]}` makes the size exactly `target_bytes` (or the minimum, the
Patient alone, when the target is smaller than that).

How: each resource is serialized once with placeholders for ids; a copy is a join of byte slices
with that copy's ids (a fixed-length suffix per copy), so each copy costs a join, not a json.dumps.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from metriport_flows.client.signing import compact_json

CHUNK_BYTES = 1 << 20
_SLOT = re.compile(rb"@@ID(\d+)@@")
_SUFFIX = b"]}"


def _header(total: int) -> bytes:
    return b'{"resourceType":"Bundle","type":"searchset","total":%d,"entry":[' % total


def _entry(resource: Mapping[str, Any], full_url: str) -> dict:
    return {"fullUrl": full_url, "resource": resource, "search": {"mode": "match"}}


def _rewrite(node: Any, slots: dict[str, int]) -> Any:
    """A copy of `node` whose references to repeated resources name placeholders instead."""
    if isinstance(node, Mapping):
        out = {}
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and value in slots:
                out[key] = f"{value.split('/', 1)[0]}/@@ID{slots[value]}@@"
            else:
                out[key] = _rewrite(value, slots)
        return out
    if isinstance(node, list):
        return [_rewrite(value, slots) for value in node]
    return node


@dataclass
class _Plan:
    lead: bytes
    templates: list[list[bytes | int]]  # per repeated entry: literal bytes and slot numbers
    heads: list[bytes]  # per slot: the first 24 characters of its ids
    entry_sizes: list[int]  # bytes of each repeated entry, leading comma included
    total: int
    full_copies: int
    partial: int  # entries of the last, partial copy
    padding: int

    @property
    def size(self) -> int:
        body = self.full_copies * sum(self.entry_sizes) + sum(self.entry_sizes[: self.partial])
        return len(_header(self.total)) + len(self.lead) + body + self.padding + len(_SUFFIX)


def _plan(resources: Iterable[Mapping[str, Any]], target_bytes: int) -> _Plan:
    resources = list(resources)
    if not resources:
        raise ValueError("a bundle needs at least one resource")
    lead_index = next((i for i, r in enumerate(resources) if r.get("resourceType") == "Patient"), 0)
    lead = resources[lead_index]
    others = [r for i, r in enumerate(resources) if i != lead_index]
    slots = {f"{r['resourceType']}/{r['id']}": i for i, r in enumerate(others)}
    seed = str(lead.get("id", ""))
    heads = []
    for i in range(len(others)):
        h = hashlib.sha256(f"{seed}:{i}".encode()).hexdigest()
        heads.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) % 4]}{h[17:20]}-".encode())
    if len(set(heads)) != len(heads):
        raise ValueError("id prefixes collided; cannot repeat these resources")
    templates, sizes = [], []
    for i, resource in enumerate(others):
        body = _rewrite(resource, slots) | {"id": f"@@ID{i}@@"}
        raw = b"," + compact_json(_entry(body, f"urn:uuid:@@ID{i}@@"))
        pieces: list[bytes | int] = [int(p) if n % 2 else p for n, p in enumerate(_SLOT.split(raw))]
        templates.append(pieces)
        sizes.append(sum(36 if isinstance(p, int) else len(p) for p in pieces))
    lead_raw = compact_json(_entry(lead, f"urn:uuid:{lead['id']}"))
    copy_size = sum(sizes)
    for digits in range(1, 20):
        fixed = len(_header(10 ** (digits - 1))) + len(lead_raw) + len(_SUFFIX)
        avail = max(0, target_bytes - fixed)
        full, rest = divmod(avail, copy_size) if copy_size else (0, 0)
        partial, used = 0, 0
        while partial < len(sizes) and used + sizes[partial] <= rest:
            used += sizes[partial]
            partial += 1
        total = 1 + full * len(others) + partial
        if len(str(total)) <= digits:
            break
    plan = _Plan(lead_raw, templates, heads, sizes, total, full, partial, 0)
    plan.padding = max(0, target_bytes - plan.size)
    return plan


def _copy(plan: _Plan, number: int, count: int) -> bytes:
    tail = b"%012x" % number
    ids = [head + tail for head in plan.heads]
    return b"".join(p if isinstance(p, bytes) else ids[p] for entry in plan.templates[:count] for p in entry)


def stream_bundle(resources: Iterable[Mapping[str, Any]], target_bytes: int) -> Iterator[bytes]:
    """Chunks (about 1 MiB each) of one Bundle JSON of exactly `bundle_size_hint(...)` bytes."""
    plan = _plan(resources, target_bytes)
    buffer = [_header(plan.total), plan.lead]
    buffered = sum(map(len, buffer))
    copies = [(n, len(plan.templates)) for n in range(plan.full_copies)]
    if plan.partial:
        copies.append((plan.full_copies, plan.partial))
    for number, count in copies:
        piece = _copy(plan, number, count)
        buffer.append(piece)
        buffered += len(piece)
        if buffered >= CHUNK_BYTES:
            yield b"".join(buffer)
            buffer, buffered = [], 0
    if buffer:
        yield b"".join(buffer)
    spaces = plan.padding
    while spaces > 0:
        step = min(spaces, CHUNK_BYTES)
        yield b" " * step
        spaces -= step
    yield _SUFFIX


def bundle_size_hint(resources: Iterable[Mapping[str, Any]], target_bytes: int) -> int:
    """The exact byte size `stream_bundle` will produce (for Content-Length), without generating it."""
    return _plan(resources, target_bytes).size


def measure(chunks: Iterable[bytes]) -> tuple[int, str]:
    """Size and lowercase-hex sha256 of a stream, consuming it chunk by chunk."""
    digest, size = hashlib.sha256(), 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()
