"""Metadata is checked against Metriport's limits (counted in UTF-16 units) before anything is sent."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metriport_flows.client.errors import InvalidMetadata
from metriport_flows.client.metadata import (
    MAX_KEY_LENGTH,
    MAX_PAIRS,
    MAX_VALUE_LENGTH,
    js_length,
    metadata_body,
    validate_metadata,
)

keys = st.text(min_size=1, max_size=MAX_KEY_LENGTH).filter(lambda k: 1 <= js_length(k) <= MAX_KEY_LENGTH)
values = st.text(max_size=MAX_VALUE_LENGTH).filter(lambda v: js_length(v) <= MAX_VALUE_LENGTH)
valid = st.dictionaries(keys.filter(lambda k: k != "disableWHFlag"), values, max_size=MAX_PAIRS)


@given(valid)
def test_valid_metadata_is_returned_unchanged(metadata: dict[str, str]) -> None:
    assert validate_metadata(metadata) == metadata
    assert metadata_body(metadata) == {"metadata": metadata}


@given(st.dictionaries(keys, values, min_size=MAX_PAIRS + 1, max_size=MAX_PAIRS + 5))
def test_more_than_fifty_pairs_is_refused(metadata: dict[str, str]) -> None:
    with pytest.raises(InvalidMetadata, match="at most 50"):
        validate_metadata(metadata)


@given(st.text(min_size=MAX_KEY_LENGTH + 1, max_size=80), values)
def test_long_keys_are_refused(key: str, value: str) -> None:
    with pytest.raises(InvalidMetadata, match="keys must be 1-40"):
        validate_metadata({key: value})


@given(keys.filter(lambda k: k != "disableWHFlag"), st.text(min_size=MAX_VALUE_LENGTH - 10))
def test_value_length_limit_is_exact(key: str, value: str) -> None:
    if js_length(value) <= MAX_VALUE_LENGTH:
        assert validate_metadata({key: value}) == {key: value}
    else:
        with pytest.raises(InvalidMetadata, match="at most 500"):
            validate_metadata({key: value})


@given(st.one_of(st.integers(), st.booleans(), st.none(), st.lists(st.text())))
def test_non_string_values_are_refused(value: object) -> None:
    with pytest.raises(InvalidMetadata, match="not a string"):
        validate_metadata({"flowRunId": value})


def test_boundaries_and_messages() -> None:
    assert validate_metadata({"k" * 40: "v" * 500}) == {"k" * 40: "v" * 500}
    with pytest.raises(InvalidMetadata, match="keys must be 1-40"):
        validate_metadata({"": "x"})
    # An emoji is two UTF-16 units, as JavaScript's .length counts it.
    with pytest.raises(InvalidMetadata, match="length 502"):
        validate_metadata({"k": "😀" * 251})
    with pytest.raises(InvalidMetadata, match="not a string"):
        validate_metadata({1: "x"})
    with pytest.raises(InvalidMetadata, match="mapping"):
        validate_metadata(["flowRunId", "x"])  # type: ignore[arg-type]


def test_webhook_kill_switch_is_refused_and_empty_metadata_is_sent() -> None:
    with pytest.raises(InvalidMetadata, match="skip the webhook"):
        validate_metadata({"disableWHFlag": "TRUE"})
    assert metadata_body({}) == {"metadata": {}}
    assert metadata_body(None) is None
    error = InvalidMetadata("bad")
    assert error.status is None and isinstance(error, ValueError) and "bad" in str(error)
