"""Signed file URLs: what `sign` produces verifies, until it expires; any tampering is refused."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import parse_qsl, unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metriport_sandbox import signed_urls
from metriport_sandbox.signed_urls import UrlDenied, UrlSigner, s3_error_xml


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def split(url: str) -> tuple[str, dict[str, str]]:
    """Path (decoded, as the server sees it) and query of a signed path-plus-query URL."""
    path, _, query = url.partition("?")
    return unquote(path), dict(parse_qsl(query))


def test_lifetimes_match_fact_sheet():
    assert signed_urls.DOWNLOAD_URL == 180
    assert signed_urls.CONSOLIDATED == 180
    assert signed_urls.BULK_DOWNLOAD == 600
    assert signed_urls.BULK_UPLOAD == 600
    assert signed_urls.BULK_RESULT == 180
    assert signed_urls.NOTIFICATION == 600


def test_url_has_s3_query_parameters():
    signer = UrlSigner(b"secret", clock=Clock(1_700_000_000.9))
    path, query = split(signer.sign("/_sandbox/files/p1/JaneSmith.xml", 180))
    assert path == "/_sandbox/files/p1/JaneSmith.xml"
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Date"] == "20231114T221320Z"
    assert query["X-Amz-Expires"] == "180"
    assert len(query["X-Amz-Signature"]) == 64


def test_valid_until_expiry_then_access_denied():
    clock = Clock(1_000_000.0)
    signer = UrlSigner(b"secret", clock=clock)
    path, query = split(signer.sign("/f", 180))
    clock.now += 179.9
    signer.verify(path, query)
    clock.now = 1_000_180.0
    with pytest.raises(UrlDenied) as denied:
        signer.verify(path, query)
    assert (denied.value.code, denied.value.message) == ("AccessDenied", "Request has expired")
    assert signer.expires_at(query) == 1_000_180.0


def test_zero_lifetime_is_always_expired():
    signer = UrlSigner(b"secret", clock=Clock(5.0))
    path, query = split(signer.sign("/f", 0))
    with pytest.raises(UrlDenied, match="Request has expired"):
        signer.verify(path, query)


@pytest.mark.parametrize(
    ("param", "value"),
    [("X-Amz-Expires", "999"), ("X-Amz-Date", "20991231T000000Z"), ("X-Amz-Signature", "0" * 64)],
)
def test_tampered_query_is_signature_mismatch(param, value):
    signer = UrlSigner(b"secret", clock=Clock(100.0))
    path, query = split(signer.sign("/f", 180))
    query[param] = value
    with pytest.raises(UrlDenied) as denied:
        signer.verify(path, query)
    assert denied.value.code == "SignatureDoesNotMatch"


def test_other_path_or_other_secret_is_refused():
    signer = UrlSigner(b"secret", clock=Clock(100.0))
    path, query = split(signer.sign("/files/a.pdf", 180))
    with pytest.raises(UrlDenied, match="SignatureDoesNotMatch"):
        signer.verify("/files/b.pdf", query)
    with pytest.raises(UrlDenied, match="SignatureDoesNotMatch"):
        UrlSigner(b"other", clock=Clock(100.0)).verify(path, query)


def test_missing_parameters():
    signer = UrlSigner(b"secret", clock=Clock(100.0))
    path, query = split(signer.sign("/f", 180))
    del query["X-Amz-Signature"]
    with pytest.raises(UrlDenied) as denied:
        signer.verify(path, query)
    assert denied.value.code == "AuthorizationQueryParametersError"


def test_lifetime_bounds():
    signer = UrlSigner(b"secret")
    with pytest.raises(ValueError):
        signer.sign("/f", -1)
    with pytest.raises(ValueError):
        signer.sign("/f", 604801)
    with pytest.raises(ValueError):
        UrlSigner(b"")


def test_s3_error_xml_shape():
    body = s3_error_xml("AccessDenied", "Request has expired", "/f?a=<b>&c", "REQ1")
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(body)
    assert root.tag == "Error"
    assert [child.tag for child in root] == ["Code", "Message", "Resource", "RequestId"]
    assert root.findtext("Resource") == "/f?a=<b>&c"
    assert root.findtext("RequestId") == "REQ1"
    assert ET.fromstring(UrlDenied("SignatureDoesNotMatch", "x").xml("/r")).findtext("Code") == (
        "SignatureDoesNotMatch"
    )


paths = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40).map(
    lambda s: "/" + s
)


@given(path=paths, lifetime=st.integers(0, 604800), start=st.floats(0, 4e9), elapsed=st.floats(0, 1e6))
def test_verify_accepts_exactly_what_sign_produced_while_fresh(path, lifetime, start, elapsed):
    clock = Clock(start)
    signer = UrlSigner(b"k", clock=clock)
    got_path, query = split(signer.sign(path, lifetime))
    assert got_path == path
    clock.now = start + elapsed
    fresh = clock.now < int(start) + lifetime
    if fresh:
        signer.verify(got_path, query)
    else:
        with pytest.raises(UrlDenied, match="Request has expired"):
            signer.verify(got_path, query)


@given(path=paths, other=paths)
def test_verify_refuses_any_other_path(path, other):
    signer = UrlSigner(b"k", clock=Clock(10.0))
    _, query = split(signer.sign(path, 60))
    if other != path:
        with pytest.raises(UrlDenied, match="SignatureDoesNotMatch"):
            signer.verify(other, query)
