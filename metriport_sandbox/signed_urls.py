"""Expiring, tamper-proof file URLs in the shape of S3 presigned URLs.

Why: Metriport hands out S3 presigned URLs that die after a few minutes (docs/metriport.md §5.4) and S3
answers 403 with an XML error once they have. Clients must cope with both, so the emulator signs its
own file URLs the same way: the query carries `X-Amz-Algorithm`, `X-Amz-Date` (UTC, basic ISO 8601),
`X-Amz-Expires` (seconds) and `X-Amz-Signature`, an HMAC-SHA256 (lowercase hex) over the path, the
date and the lifetime. It is not AWS SigV4 (no credential scope, no canonical request): only the
parameter names, the expiry rule and the error bodies are S3's.

A URL with lifetime 0 is always expired (the "URL lifetime 0 s" fault). The clock is injectable so
tests move time instead of sleeping.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from urllib.parse import quote, urlencode
from xml.sax.saxutils import escape

# Lifetimes in seconds, docs/metriport.md §5.4 (the code's values where code and docs disagree).
DOWNLOAD_URL = 180  # GET /document/download-url (S3Utils default; the docs say 60 s)
CONSOLIDATED = 180  # consolidated-data attachments: json, gzip, pdf, html
BULK_DOWNLOAD = 600  # document-bulk-download-urls
BULK_UPLOAD = 600  # bulk patient create CSV upload (PUT)
BULK_RESULT = 180  # bulk patient create result CSV
MEDICAL_RECORD = 180  # GET /patient/{id}/medical-record
NOTIFICATION = 600  # patient.admit / patient.discharge bundle

MAX_EXPIRES = 604800  # S3 refuses presigned URLs that live longer than a week

ALGORITHM = "AWS4-HMAC-SHA256"
P_ALGORITHM = "X-Amz-Algorithm"
P_DATE = "X-Amz-Date"
P_EXPIRES = "X-Amz-Expires"
P_SIGNATURE = "X-Amz-Signature"
SIGNED_PARAMS = (P_ALGORITHM, P_DATE, P_EXPIRES, P_SIGNATURE)

_DATE_FORMAT = "%Y%m%dT%H%M%SZ"

MISSING_PARAMS_MESSAGE = (
    "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Signature, "
    "X-Amz-Date and X-Amz-Expires parameters."
)
EXPIRED_MESSAGE = "Request has expired"
SIGNATURE_MESSAGE = (
    "The request signature we calculated does not match the signature you provided. Check your key and signing method."
)


class UrlDenied(Exception):
    """A signed URL refused, with S3's error code and message; always an HTTP 403."""

    status_code = 403

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def xml(self, resource: str, request_id: str | None = None) -> bytes:
        return s3_error_xml(self.code, self.message, resource, request_id)


class UrlSigner:
    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time) -> None:
        if not secret:
            raise ValueError("signing secret must not be empty")
        self._secret = secret
        self._clock = clock

    def _signature(self, path: str, amz_date: str, expires: str) -> str:
        message = "\n".join((ALGORITHM, path, amz_date, expires)).encode("utf-8")
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def sign(self, path: str, expires_in: int) -> str:
        """`path?X-Amz-...`, valid while now < signing time (whole seconds) + expires_in.

        The signature covers the decoded path (what the server sees as `request.url.path`); the
        returned URL has it percent-encoded.
        """
        if not 0 <= expires_in <= MAX_EXPIRES:
            raise ValueError(f"expires_in must be within 0..{MAX_EXPIRES} seconds")
        amz_date = datetime.fromtimestamp(int(self._clock()), UTC).strftime(_DATE_FORMAT)
        expires = str(expires_in)
        query = {
            P_ALGORITHM: ALGORITHM,
            P_DATE: amz_date,
            P_EXPIRES: expires,
            P_SIGNATURE: self._signature(path, amz_date, expires),
        }
        return f"{quote(path, safe='/')}?{urlencode(query)}"

    def verify(self, path: str, query: Mapping[str, str]) -> None:
        """Raise `UrlDenied` unless `query` is what `sign(path, ...)` produced and it has not expired."""
        values = {name: query.get(name) for name in SIGNED_PARAMS}
        if any(not value for value in values.values()) or values[P_ALGORITHM] != ALGORITHM:
            raise UrlDenied("AuthorizationQueryParametersError", MISSING_PARAMS_MESSAGE)
        amz_date, expires = str(values[P_DATE]), str(values[P_EXPIRES])
        expected = self._signature(path, amz_date, expires)
        if not hmac.compare_digest(expected, str(values[P_SIGNATURE]).lower()):
            raise UrlDenied("SignatureDoesNotMatch", SIGNATURE_MESSAGE)
        # The signature covers date and lifetime, so both parse: only our own signer made them.
        signed_at = datetime.strptime(amz_date, _DATE_FORMAT).replace(tzinfo=UTC).timestamp()
        if self._clock() >= signed_at + int(expires):
            raise UrlDenied("AccessDenied", EXPIRED_MESSAGE)

    def expires_at(self, query: Mapping[str, str]) -> float:
        """When a URL signed with this query stops working (epoch seconds)."""
        signed_at = datetime.strptime(query[P_DATE], _DATE_FORMAT).replace(tzinfo=UTC).timestamp()
        return signed_at + int(query[P_EXPIRES])

    def __repr__(self) -> str:
        return "UrlSigner(secret=***)"


def s3_error_xml(code: str, message: str, resource: str, request_id: str | None = None) -> bytes:
    """S3's error document: `<Error><Code/><Message/><Resource/><RequestId/></Error>`."""
    rid = request_id or secrets.token_hex(8).upper()
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        f"<Resource>{escape(resource)}</Resource><RequestId>{escape(rid)}</RequestId></Error>"
    )
    return body.encode("utf-8")
