"""The receiver's envelope agrees with the typed message on every golden sample and refuses what
`parse_message` refuses, so reading only the envelope before the answer stores each message as before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metriport_flows.client.envelope import InvalidMessage, parse_envelope
from metriport_flows.client.messages import PingMessage, parse_message
from metriport_flows.client.signing import compact_json

SAMPLES = sorted((Path(__file__).parent / "samples").glob("*.json"))


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda path: path.stem)
def test_the_envelope_holds_the_typed_messages_ids(sample: Path) -> None:
    raw = sample.read_bytes()
    typed, envelope = parse_message(raw), parse_envelope(raw)
    assert (envelope.message_id, envelope.type, envelope.request_id) == (typed.message_id, typed.type, typed.request_id)
    assert (envelope.patient_id, envelope.flow_run_id, envelope.stage) == (
        typed.patient_id,
        typed.flow_run_id,
        typed.stage,
    )
    assert envelope.ping == (typed.ping if isinstance(typed, PingMessage) else None)


def test_a_ping_whose_challenge_is_not_text_is_kept_as_a_message() -> None:
    """parse_message makes it a GenericMessage (stored, no pong); so does the envelope."""
    body = compact_json({"ping": 12, "meta": {"messageId": "m-1", "type": "ping"}})
    assert not isinstance(parse_message(body), PingMessage)
    assert parse_envelope(body).ping is None


def test_a_patient_id_that_is_not_text_is_kept_as_text() -> None:
    body = compact_json(
        {"meta": {"messageId": "m-1", "type": "medical.document-download"}, "patients": [{"patientId": 7}]}
    )
    assert parse_envelope(body).patient_id == parse_message(body).patient_id == "7"


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1]", b'{"meta": {}}', b'{"meta": {"messageId": ""}}', b"\xff\xfe{}", b"[" * 100_000],
    ids=["not-json", "not-object", "no-id", "blank-id", "not-utf8", "too-deep"],
)
def test_what_parse_message_refuses_the_envelope_refuses(body: bytes) -> None:
    with pytest.raises(InvalidMessage):
        parse_message(body)
    with pytest.raises(InvalidMessage):
        parse_envelope(body)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@given(
    patient_id=JSON,
    message_type=st.sampled_from(
        ["medical.document-download", "patient.admit", "medical.bulk-patient-create", "x.new"]
    ),
    key=st.sampled_from(["patients", "payload"]),
)
def test_any_patient_id_anywhere_reads_the_same_in_both(patient_id: object, message_type: str, key: str) -> None:
    """Whatever Metriport puts where a patient's id may go, for types that keep it there or elsewhere
    (an empty id is no id in both)."""
    item = {"patientId": patient_id}
    body = {"meta": {"messageId": "m-1", "type": message_type}, key: [item] if key == "patients" else item}
    assert parse_envelope(json.dumps(body)).patient_id == parse_message(json.dumps(body)).patient_id
