"""Artifact keys for the patient-records artifact."""

from tasks.bundles import artifact_key


def test_artifact_key_uses_only_what_prefect_allows() -> None:
    assert artifact_key("0195D964-d166.7226_89") == "patient-records-0195d964-d166-7226-89"
    assert artifact_key("abc") == "patient-records-abc"
