"""The big-bundle stream: one valid Bundle of exactly the announced size, references intact."""

from __future__ import annotations

import hashlib
import json
import random

import pytest
from fhir.resources.R4B.bundle import Bundle
from hypothesis import given, settings
from hypothesis import strategies as st

from metriport_sandbox.bigbundle import (
    CHUNK_BYTES,
    bundle_size_hint,
    measure,
    stream_bundle,
)
from metriport_sandbox.fhir_data import (
    bundle_json,
    patient_resources,
    unresolved_references,
    validate,
)


@pytest.fixture(scope="module")
def jane() -> list[dict]:
    return patient_resources("0195d964-d166-7226-8912-76934c23c140", "jane", random.Random(11))


def test_few_megabytes_is_one_valid_bundle(jane):
    target = 4_000_000
    chunks = list(stream_bundle(jane, target))
    raw = b"".join(chunks)
    assert len(raw) == target == bundle_size_hint(jane, target)
    assert max(map(len, chunks)) < 2 * CHUNK_BYTES
    doc = json.loads(raw)
    assert list(doc) == ["resourceType", "type", "total", "entry"]
    assert doc["type"] == "searchset" and doc["total"] == len(doc["entry"]) > 10 * len(jane)
    resources = [entry["resource"] for entry in doc["entry"]]
    assert [r["resourceType"] for r in resources].count("Patient") == 1
    assert resources[0] == jane[0]
    assert len({(r["resourceType"], r["id"]) for r in resources}) == len(resources)
    assert all(entry["fullUrl"] == f"urn:uuid:{entry['resource']['id']}" for entry in doc["entry"])
    assert unresolved_references(resources) == []
    for resource in resources[len(jane) * 3 : len(jane) * 4]:
        validate(resource)


def test_each_copy_is_the_record_with_fresh_ids(jane):
    doc = json.loads(b"".join(stream_bundle(jane, 1_000_000)))
    originals = jane[1:]
    copy = [entry["resource"] for entry in doc["entry"][1 + len(originals) : 1 + 2 * len(originals)]]
    renamed = {f"{o['resourceType']}/{o['id']}": f"{c['resourceType']}/{c['id']}" for o, c in zip(originals, copy)}
    assert not {o["id"] for o in originals} & {c["id"] for c in copy}

    def rename(node):
        if isinstance(node, dict):
            return {k: renamed.get(v, v) if k == "reference" else rename(v) for k, v in node.items()}
        if isinstance(node, list):
            return [rename(v) for v in node]
        return node

    assert copy == [rename(o) | {"id": c["id"]} for o, c in zip(originals, copy)]


def test_stream_is_deterministic_and_measured(jane):
    size, digest = measure(stream_bundle(jane, 700_000))
    raw = b"".join(stream_bundle(jane, 700_000))
    assert (size, digest) == (len(raw), hashlib.sha256(raw).hexdigest())
    Bundle.model_validate_json(raw)


def test_small_target_gives_the_minimum_bundle(jane):
    raw = b"".join(stream_bundle(jane, 10))
    assert json.loads(raw)["total"] == 1
    assert len(raw) == bundle_size_hint(jane, 10) > 10


def test_patient_only_pads_with_whitespace(jane):
    raw = b"".join(stream_bundle(jane[:1], 50_000))
    assert len(raw) == 50_000
    assert json.loads(raw)["entry"] == json.loads(bundle_json(jane[:1]))["entry"]


def test_empty_resources_refused():
    with pytest.raises(ValueError):
        list(stream_bundle([], 1000))


@settings(max_examples=30, deadline=None)
@given(target=st.integers(min_value=0, max_value=400_000))
def test_any_target_is_hit_exactly(jane, target):
    raw = b"".join(stream_bundle(jane, target))
    assert len(raw) == max(target, bundle_size_hint(jane, 0)) == bundle_size_hint(jane, target)
    doc = json.loads(raw)
    assert doc["total"] == len(doc["entry"])
    assert unresolved_references([e["resource"] for e in doc["entry"]]) == []
