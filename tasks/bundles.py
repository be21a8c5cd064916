"""Tasks for the stored consolidated bundle: check it, and publish the run's artifact.

The dispatcher already downloaded the bundle while its 3-minute URL was valid (docs/design.md fact 6) and
passed a pointer; here the run checks that file (sha256, FHIR R4B validation, counts by type) and
records what it found as a markdown artifact. Both only read, so neither needs caching; the artifact
holds ids, counts and paths, never the bundle's contents.
"""

from __future__ import annotations

import re

from prefect import task
from prefect.artifacts import acreate_markdown_artifact

from metriport_flows.domain.patient_records import (
    BundleSummary,
    ConversionType,
    PatientRecordsResult,
    artifact_markdown,
    check_bundle,
)
from metriport_flows.domain.stages import ConsolidatedReady


@task
def check_stored_bundle(result: ConsolidatedReady, conversion_type: ConversionType) -> BundleSummary:
    """Parse, validate and count the stored bundle; raises `BundleInvalid` on a bad file."""
    return check_bundle(result, conversion_type)


def artifact_key(patient_id: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes; one key per patient keeps its history."""
    return "patient-records-" + re.sub(r"[^a-z0-9-]", "-", patient_id.lower())


@task
async def publish_records_artifact(result: PatientRecordsResult) -> None:
    await acreate_markdown_artifact(
        markdown=artifact_markdown(result),
        key=artifact_key(result.patient_id),
        description=f"Records of patient {result.patient_id}: {result.total_resources} resources",
    )
