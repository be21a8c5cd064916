"""Hostile input at the receiver, over real HTTP and both databases: never a 5xx, never an unsigned row,
every signed well-formed message stored once, a signed message that cannot be stored refused once."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metriport_flows.client.signing import SIGNATURE_HEADER, compact_json
from metriport_flows.store import MessageStatus, Store
from metriport_flows.webhook.receiver import WEBHOOK_PATH
from tests.fixtures.inbox import Receiver, download_message, meta, signed


def _rows(store: Store) -> dict[str, int]:
    return {status: count for status, count, _ in store.backlog()}


@pytest.fixture
def client(receiver: Receiver) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=receiver.base_url, timeout=30) as http:
        yield http


def test_a_non_ascii_signature_header_is_refused_with_401(receiver: Receiver, client: httpx.Client) -> None:
    body, _ = signed(download_message("pat-1"))
    for value in ("é".encode("latin-1"), "ß✓".encode(), b"\xff\xfe"):
        answer = client.post(WEBHOOK_PATH, content=body, headers={SIGNATURE_HEADER.encode(): value})
        assert answer.status_code == 401
    assert _rows(receiver.store) == {}


def _bad_bodies() -> list[tuple[str, bytes]]:
    message = download_message("pat-1")
    deep = b"[" * 5_000 + b"]" * 5_000
    return [
        ("lone surrogate in the id", compact_json(message).replace(b'"pat-1"', b'"pat-\\ud800"')),
        (
            "lone surrogate in the message id",
            compact_json(message).replace(message["meta"]["messageId"].encode(), b"\\udfff"),
        ),
        ("raw surrogate bytes", compact_json(message).replace(b"pat-1", b"pat-\xed\xa0\x80")),
        ("utf-16", json.dumps(message).encode("utf-16")),
        ("utf-32", json.dumps(message).encode("utf-32-le")),
        ("deep nesting", b'{"meta":' + json.dumps(meta("x")).encode() + b',"deep":' + deep + b"}"),
        (
            "deep nesting in meta.data",
            compact_json({"meta": {**meta("x"), "data": {"k": [[[[[]]]]]}}}).replace(b"[[[[[]]]]]", deep),
        ),
        ("NUL in the patient id", compact_json(message).replace(b'"pat-1"', b'"pat-\\u0000"')),
        (
            "message id longer than its column",
            compact_json({**message, "meta": {**message["meta"], "messageId": "m" * 201}}),
        ),
        ("patient id longer than its column", compact_json(message).replace(b'"pat-1"', b'"' + b"p" * 201 + b'"')),
        ("flow run id longer than its column", compact_json(download_message("pat-1", data={"flowRunId": "r" * 65}))),
        ("not JSON", b"not json {"),
    ]


@pytest.mark.parametrize(("case", "body"), _bad_bodies(), ids=[case for case, _ in _bad_bodies()])
def test_a_signed_message_that_cannot_be_stored_is_refused_once_and_kept(
    receiver: Receiver, client: httpx.Client, case: str, body: bytes
) -> None:
    _, headers = signed(body)
    first = client.post(WEBHOOK_PATH, content=body, headers=headers)
    retried = client.post(WEBHOOK_PATH, content=body, headers=headers)
    assert first.status_code == 400, first.text
    # Metriport's retry of it (the reconciler asks for one when a delivery failed) is answered 200,
    # so it is not asked for again and again
    assert retried.status_code == 200 and retried.json()["duplicate"] is True
    assert _rows(receiver.store) == {MessageStatus.rejected.value: 1}
    row = receiver.store.get_message(f"rejected-{hashlib.sha256(body).hexdigest()}")
    assert row is not None and row.status == MessageStatus.rejected and row.detail


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
# what HTTP/1.1 lets a header value be (any byte but controls, no blank at either end)
header_values = st.from_regex(rb"\A([\x21-\x7e\x80-\xff]([\x20-\x7e\x80-\xff\t]{0,78}[\x21-\x7e\x80-\xff])?)?\Z")


def _message(patient_id: str, message_id: str, data: dict[str, Any], extra: Any, kind: str) -> dict[str, Any]:
    return {
        "meta": {**meta(kind, data=None, message_id=message_id), "data": data},
        "patients": [{"patientId": patient_id, "status": "completed", "documents": []}],
        "extra": extra,
    }


PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@PROPERTY
@given(
    body=st.binary(max_size=300),
    signature=header_values,
    sign=st.booleans(),
    extra=st.dictionaries(
        st.from_regex(rb"\Ax-[a-z0-9-]{1,12}\Z") | st.just(b"content-type"), header_values, max_size=3
    ),
)
def test_arbitrary_bytes_and_headers_never_get_a_5xx_or_an_unsigned_row(
    receiver: Receiver, client: httpx.Client, body: bytes, signature: bytes, sign: bool, extra: dict[bytes, bytes]
) -> None:
    before = _rows(receiver.store)
    headers = {**extra, **({k.encode(): v.encode() for k, v in signed(body)[1].items()} if sign else {})}
    if not sign:
        headers[SIGNATURE_HEADER.encode()] = signature
    answer = client.post(WEBHOOK_PATH, content=body, headers=headers)
    assert answer.status_code < 500, answer.text
    if not sign:
        assert answer.status_code == 401 and _rows(receiver.store) == before


@PROPERTY
@given(
    patient_id=st.text(max_size=220),
    message_id=st.text(min_size=1, max_size=220),
    data=st.dictionaries(st.sampled_from(["flowRunId", "stage", "other"]), json_values, max_size=3),
    extra=json_values,
    kind=st.sampled_from(["medical.document-download", "medical.consolidated-data", "patient.admit", "x" * 201]),
    sign=st.booleans(),
)
def test_arbitrary_json_shapes_never_get_a_5xx_and_signed_well_formed_ones_are_stored_once(
    receiver: Receiver,
    client: httpx.Client,
    patient_id: str,
    message_id: str,
    data: dict[str, Any],
    extra: Any,
    kind: str,
    sign: bool,
) -> None:
    message_id = f"{uuid.uuid4()}-{message_id}"  # unique per example: the database lives across examples
    message = _message(patient_id, message_id, data, extra, kind)
    body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    headers = signed(body)[1] if sign else {SIGNATURE_HEADER: "0" * 64}
    answers = [client.post(WEBHOOK_PATH, content=body, headers=headers) for _ in range(2)]
    assert all(answer.status_code < 500 for answer in answers), answers[0].text
    stored = receiver.store.get_message(message_id)
    if not sign:
        assert [a.status_code for a in answers] == [401, 401] and stored is None
        return
    if answers[0].status_code == 200:
        assert stored is not None and stored.body is not None and stored.body.encode() == body
        assert [a.json()["duplicate"] for a in answers] == [False, True]
    else:
        assert answers[0].status_code == 400 and stored is None
        rejected = receiver.store.get_message(f"rejected-{hashlib.sha256(body).hexdigest()}")
        assert rejected is not None and rejected.status == MessageStatus.rejected
    well_formed = (
        len(message_id) <= 200
        and len(patient_id) <= 200
        and all(len(_as_text(data[key])) <= 64 for key in ("flowRunId", "stage") if key in data)
        and all("\x00" not in text and _utf8(text) for text in (message_id, patient_id, *map(_as_text, data.values())))
        and len(kind) <= 200
        and _utf8(body.decode("utf-8", "surrogatepass"))
    )
    if well_formed:
        assert answers[0].status_code == 200


def _as_text(value: Any) -> str:
    """A meta.data value as the receiver keeps it (text as is, anything else as its JSON)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
