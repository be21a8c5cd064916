"""Bulk patient create CSV rules (docs/metriport.md §2.2) and the result CSV parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metriport_flows.domain.bulk_csv import (
    InvalidCsv,
    check_csv,
    created_patient_ids,
    parse_result_csv,
    require_valid_csv,
)

HEADER = "externalId,firstName,lastName,dob,gender,addressLine1,addressLine2,city,state,zip,phone,email"
GOOD = "ext-1,Ann,Lee,1980-04-02,F,1 Main St,,Boston,MA,02110,617-555-0100,ann@example.com"


def csv_of(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def problems(data: bytes) -> set[tuple[int, str, str]]:
    return {(e.line, e.column, e.problem) for e in check_csv(data).errors}


def test_a_good_csv_passes_with_its_row_count():
    check = require_valid_csv(csv_of(HEADER, GOOD, GOOD.replace("ext-1", "ext-2")))
    assert check.ok and check.rows == 2 and check.errors == []


def test_headers_are_case_insensitive_and_indexed_groups_count():
    header = "FIRSTNAME,lastname,DOB,Gender,addressline1-3,CITY-3,state-3,Zip-3,Phone-10"
    check = check_csv(csv_of(header, "Ann,Lee,1980-04-02,female,1 Main St,Boston,ma,02110-1234,+1 617 555 0100"))
    assert check.ok, check.summary()


def test_a_partly_given_address_group_names_each_missing_column():
    data = csv_of(HEADER + ",addressLine1-2,city-2,state-2,zip-2", GOOD + ",2 Side St,,MA,")
    assert problems(data) == {
        (2, "city-2", "missing in a partly given address"),
        (2, "zip-2", "missing in a partly given address"),
    }


def test_a_row_without_any_complete_address_is_refused():
    data = csv_of(HEADER, "ext-1,Ann,Lee,1980-04-02,F,,,,,,,")
    assert problems(data) == {(2, "addressLine1", "at least one complete address is required")}


def test_each_bad_field_is_reported_on_its_own_line_without_the_value():
    lines = [
        HEADER + ",ssn,driversLicenceNo,driversLicenceState",
        GOOD + ",,,",
        "ext-2,,Lee,02/04/1980,X,1 Main St,,Boston,ZZ,0211,555,not-an-email,12345,D123,",
    ]
    check = check_csv(csv_of(*lines))
    assert {(e.line, e.column) for e in check.errors} == {
        (3, "firstName"),
        (3, "dob"),
        (3, "gender"),
        (3, "state"),
        (3, "zip"),
        (3, "phone"),
        (3, "email"),
        (3, "ssn"),
        (3, "driversLicenceState"),
    }
    assert "02/04/1980" not in check.summary() and "not-an-email" not in check.summary()


def test_a_future_birth_date_is_refused():
    assert problems(csv_of(HEADER, GOOD.replace("1980-04-02", "2999-01-01"))) == {
        (2, "dob", "must be a past date as YYYY-MM-DD")
    }


def test_missing_required_columns_stop_before_the_rows():
    assert problems(csv_of("firstName,lastName,city", "Ann,Lee,Boston")) == {
        (0, "dob", "required column missing"),
        (0, "gender", "required column missing"),
        (0, "addressLine1", "no address columns"),
    }


def test_a_column_given_twice_in_different_case_is_an_error():
    assert (0, "dob", "column appears twice (headers ignore case)") in problems(csv_of(HEADER + ",DOB", GOOD + ",x"))


def test_unknown_columns_are_warned_about_not_refused():
    check = check_csv(csv_of(HEADER + ",favouriteColour", GOOD + ",blue"))
    assert check.ok and check.warnings == ["1 column(s) Metriport ignores: favouritecolour"]


def test_an_empty_csv_and_undecodable_bytes_are_refused():
    assert not check_csv(csv_of(HEADER)).ok
    assert problems(b"\xff\xfe\x00bad") == {(0, "file", "not a UTF-8 CSV (UnicodeDecodeError)")}
    with pytest.raises(InvalidCsv) as raised:
        require_valid_csv(csv_of(HEADER))
    assert "no patient rows" in str(raised.value)


def test_more_cells_than_columns_is_an_error():
    assert problems(csv_of(HEADER, GOOD + ",extra")) == {(2, "row", "13 cells for 12 columns")}


@given(st.lists(st.sampled_from(["firstName", "lastName", "dob", "gender", "city", "zip"]), unique=True))
def test_blanking_required_cells_always_yields_errors_for_exactly_those(blanked):
    names = HEADER.split(",")
    cells = GOOD.split(",")
    for name in blanked:
        cells[names.index(name)] = ""
    columns = {e.column for e in check_csv(csv_of(HEADER, ",".join(cells))).errors}
    assert columns == set(blanked)


def test_the_result_csv_gives_ids_status_and_reason():
    rows = parse_result_csv(
        csv_of(
            HEADER + ",metriportId,STATUS,reason",
            GOOD + ",0195-aaaa,succeeded,",
            GOOD.replace("ext-1", "ext-2") + ",,failed,Missing dob",
        )
    )
    assert [(r.line, r.external_id, r.metriport_id, r.status, r.reason) for r in rows] == [
        (2, "ext-1", "0195-aaaa", "succeeded", None),
        (3, "ext-2", None, "failed", "Missing dob"),
    ]
    assert created_patient_ids(rows) == ["0195-aaaa"]


def test_a_result_csv_without_the_result_columns_is_refused():
    with pytest.raises(ValueError, match="metriportid, status, reason"):
        parse_result_csv(csv_of(HEADER, GOOD))
