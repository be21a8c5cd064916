"""Metriport's webhook signature: lowercase hex HMAC-SHA256 of the exact body bytes, keyed by the
webhook key (not the API key). The emulator signs with this class and the receiver verifies with it,
so one test pins both to Metriport's scheme.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

SIGNATURE_HEADER = "x-metriport-signature"


def compact_json(payload: Any) -> bytes:
    """The bytes `JSON.stringify` produces: no spaces, non-ASCII left unescaped, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class WebhookSigner:
    def __init__(self, key: str) -> None:
        if not key:
            raise ValueError("webhook key must not be empty")
        self._key = key.encode("utf-8")

    def sign(self, body: bytes) -> str:
        return hmac.new(self._key, body, hashlib.sha256).hexdigest()

    def verify(self, body: bytes, signature: str | None) -> bool:
        if not signature or not signature.isascii():  # compare_digest raises TypeError on non-ASCII text
            return False
        return hmac.compare_digest(self.sign(body), signature.strip())

    def __repr__(self) -> str:
        return "WebhookSigner(key=***)"
