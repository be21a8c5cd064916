"""Request metadata (echoed back as `meta.data` in webhooks), checked before sending.

Metriport validates it only on the server (Zod: at most 50 pairs, keys 1–40 characters, values at most
500), answering 400 after the fact; checking here turns that into a clear local error. Lengths are
counted in UTF-16 code units, as JavaScript counts them, so nothing accepted here is refused there.
The body is always `{"metadata": {...}}`: the official Python SDK posts the bare dict, which the server
silently drops (docs/metriport.md §2.2).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from metriport_flows.client.errors import InvalidMetadata

MAX_PAIRS = 50
MAX_KEY_LENGTH = 40
MAX_VALUE_LENGTH = 500
# Undocumented kill switch: metadata {"disableWHFlag": "true"} makes Metriport skip that flow's webhook
# while recording it as delivered, so a flow waiting for it would hang.
WEBHOOK_KILL_SWITCH = "disableWHFlag"


def js_length(text: str) -> int:
    """`text.length` in JavaScript: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def validate_metadata(metadata: Mapping[str, Any]) -> dict[str, str]:
    """Return the metadata as a plain dict of strings, or raise InvalidMetadata saying what is wrong."""
    if not isinstance(metadata, Mapping):
        raise InvalidMetadata(f"metadata must be a mapping of strings, got {type(metadata).__name__}")
    if len(metadata) > MAX_PAIRS:
        raise InvalidMetadata(f"metadata has {len(metadata)} pairs; Metriport accepts at most {MAX_PAIRS}")
    checked: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise InvalidMetadata(f"metadata key {key!r} is not a string")
        if not 1 <= js_length(key) <= MAX_KEY_LENGTH:
            raise InvalidMetadata(
                f"metadata key {key[:50]!r} has length {js_length(key)}; keys must be 1-{MAX_KEY_LENGTH}"
            )
        if not isinstance(value, str):
            raise InvalidMetadata(f"metadata value for {key!r} is {type(value).__name__}, not a string")
        if js_length(value) > MAX_VALUE_LENGTH:
            raise InvalidMetadata(
                f"metadata value for {key!r} has length {js_length(value)}; at most {MAX_VALUE_LENGTH}"
            )
        if key == WEBHOOK_KILL_SWITCH and value.strip().lower() == "true":
            raise InvalidMetadata(f"{WEBHOOK_KILL_SWITCH}=true would make Metriport skip the webhook")
        checked[key] = value
    return checked


def metadata_body(metadata: Mapping[str, Any] | None) -> dict[str, dict[str, str]] | None:
    """The JSON body for a start call: `{"metadata": {...}}`, or None to send no body at all."""
    if metadata is None:
        return None
    return {"metadata": validate_metadata(metadata)}
