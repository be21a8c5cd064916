"""One id shape everywhere: the parameter models and the cohort's checks refuse the same values."""

import pytest
from pydantic import ValidationError

from metriport_flows.domain.cohort import CohortInputError, check_patient_ids
from metriport_flows.domain.ids import is_id
from metriport_flows.domain.patient_records import PatientRecordsParams

GOOD = ["0195d964-d166-7226-8912-76934c23c140", "abc", "a.b_c-d", "7"]
BAD = ["", ".", "..", "-p1", "_x", "a/b", "a b", "Jane Smith", "x" * 65, "é"]


@pytest.mark.parametrize("value", GOOD)
def test_ids_metriport_hands_out_are_accepted(value: str) -> None:
    assert is_id(value)
    assert PatientRecordsParams(patient_id=value).patient_id == value
    assert check_patient_ids([value]) == [value]


@pytest.mark.parametrize("value", BAD)
def test_anything_else_is_refused_the_same_way_everywhere(value: str) -> None:
    assert not is_id(value)
    with pytest.raises(ValidationError):
        PatientRecordsParams(patient_id=value)
    with pytest.raises(CohortInputError):
        check_patient_ids([value])
