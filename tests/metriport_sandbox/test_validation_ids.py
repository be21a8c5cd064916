"""Validation rules (NPI check digit, metadata limits, dates) and id formats, property-tested."""

from __future__ import annotations

import random
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metriport_sandbox import validation
from metriport_sandbox.errors import ApiError
from metriport_sandbox.ids import NANOID_ALPHABET, nanoid, uuid4, uuid7


@given(st.text("0123456789", min_size=9, max_size=9))
def test_exactly_one_check_digit_makes_an_npi_valid(base):
    assert sum(validation.npi_is_valid(base + str(d)) for d in range(10)) == 1


def test_known_npis():
    assert validation.npi_is_valid("1234567893")
    assert not validation.npi_is_valid("1234567890")
    assert not validation.npi_is_valid("123456789")


keys = st.text(min_size=1, max_size=40)
values = st.text(max_size=500)


@given(st.dictionaries(keys, values, max_size=50))
def test_metadata_within_limits_is_accepted_as_is(metadata):
    assert validation.metadata({"metadata": metadata, "other": 1}) == metadata


@given(st.dictionaries(keys, values, min_size=51, max_size=60))
def test_more_than_fifty_pairs_is_refused_on_meta(metadata):
    with pytest.raises(ApiError) as refused:
        validation.metadata({"metadata": metadata})
    assert refused.value.status == 400 and "Record has too many properties, on [meta]" in refused.value.body["detail"]


def test_metadata_absent_or_null_is_none_and_bad_values_are_refused():
    assert validation.metadata(None) is None and validation.metadata({"x": 1}) is None
    assert validation.metadata({"metadata": {}}) == {}
    for bad in ({"": "v"}, {"k" * 41: "v"}, {"k": "v" * 501}, {"k": 5}):
        with pytest.raises(ApiError):
            validation.metadata({"metadata": bad})


@pytest.mark.parametrize("text", ["2020-02-30", "2020/01/01", "20200101", "2020-1-1"])
def test_bad_dates(text):
    with pytest.raises(ApiError) as refused:
        validation.parse_date(text, "dateFrom")
    assert refused.value.body["detail"] == "Date must be in format YYYY-MM-DD, on [dateFrom]"


def test_id_formats_are_seeded():
    rng = random.Random(1)
    first = uuid.UUID(uuid7(rng, now_ms=1_700_000_000_000))
    assert first.version == 7 and first.variant == uuid.RFC_4122
    assert int.from_bytes(first.bytes[:6], "big") == 1_700_000_000_000
    later = uuid7(rng, now_ms=1_700_000_000_001)
    assert later > str(first)
    assert uuid.UUID(uuid4(random.Random(2))).version == 4
    assert uuid4(random.Random(2)) == uuid4(random.Random(2))
    key = nanoid(random.Random(3))
    assert len(key) == 21 and set(key) <= set(NANOID_ALPHABET)
