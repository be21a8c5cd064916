"""Bulk patient create CSVs: validate before upload, parse Metriport's result CSV.

Metriport checks the CSV only after the upload, row by row, and reports bad rows in a result CSV that
arrives minutes to hours later. Checking it here first turns a slow round trip into an immediate,
precise error list. The rules follow Metriport's patient-import parser (docs/metriport.md §2.2): headers are
matched case-insensitively; address, phone and email columns come unindexed (`city`) or indexed
`-1`..`-10` (`city-1`); an address group given in part makes the row invalid; at least one complete
address is required. Errors name the line and the column, never the value (it is PHI).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import date

MAX_ROWS = 100_000
MAX_GROUPS = 10
GROUP_SUFFIXES = ("",) + tuple(f"-{n}" for n in range(1, MAX_GROUPS + 1))
ADDRESS_FIELDS = ("addressline1", "addressline2", "city", "state", "zip")
ADDRESS_REQUIRED = ("addressline1", "city", "state", "zip")
PERSON_COLUMNS = ("externalid", "firstname", "lastname", "dob", "gender")
REQUIRED_COLUMNS = ("firstname", "lastname", "dob", "gender")
ID_COLUMNS = ("ssn", "driverslicenceno", "driverslicencestate")
RESULT_COLUMNS = ("metriportid", "status", "reason")
KNOWN_COLUMNS = frozenset(
    PERSON_COLUMNS
    + ID_COLUMNS
    + tuple(f"{name}{suffix}" for name in ADDRESS_FIELDS + ("phone", "email") for suffix in GROUP_SUFFIXES)
)
GENDERS = {"m": "M", "male": "M", "f": "F", "female": "F", "o": "O", "other": "O", "u": "U", "unknown": "U"}
US_STATES = frozenset(
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC "
    "ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY AS GU MP PR VI UM".split()
)
ZIP = re.compile(r"^\d{5}(-?\d{4})?$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
CANONICAL = {
    "addressline1": "addressLine1",
    "addressline2": "addressLine2",
    "firstname": "firstName",
    "lastname": "lastName",
    "externalid": "externalId",
}


def column(name: str, suffix: str = "") -> str:
    """The column as Metriport documents it (headers are case-insensitive; errors read better this way)."""
    return f"{CANONICAL.get(name, name)}{suffix}"


@dataclass(frozen=True)
class RowError:
    """One problem: the CSV line (the header is line 1), the column, and what is wrong; never the value."""

    line: int
    column: str
    problem: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "header"
        return f"{where}, {self.column}: {self.problem}"


@dataclass
class CsvCheck:
    rows: int = 0
    errors: list[RowError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.rows > 0 and not self.errors

    def summary(self, limit: int = 20) -> str:
        shown = "\n".join(str(error) for error in self.errors[:limit])
        more = f"\n... and {len(self.errors) - limit} more" if len(self.errors) > limit else ""
        return f"{len(self.errors)} problem(s) in {self.rows} row(s):\n{shown}{more}"


class InvalidCsv(ValueError):
    """The CSV would be rejected by Metriport; `.check` lists every problem found."""

    def __init__(self, check: CsvCheck) -> None:
        super().__init__(check.summary())
        self.check = check


def _decode(data: bytes | str) -> str:
    return data if isinstance(data, str) else data.decode("utf-8-sig")


def _date_ok(text: str) -> bool:
    try:
        return date.fromisoformat(text) <= date.today() and len(text) == 10
    except ValueError:
        return False


def _check_address(line: int, row: dict[str, str], suffix: str, errors: list[RowError]) -> bool:
    """True when the group is complete and valid; a partly given group is an error."""
    values = {name: row.get(f"{name}{suffix}", "") for name in ADDRESS_FIELDS}
    if not any(values.values()):
        return False
    for name in ADDRESS_REQUIRED:
        if not values[name]:
            errors.append(RowError(line, column(name, suffix), "missing in a partly given address"))
    if values["state"] and values["state"].upper() not in US_STATES:
        errors.append(RowError(line, f"state{suffix}", "not a 2-letter US state or territory"))
    if values["zip"] and not ZIP.match(values["zip"]):
        errors.append(RowError(line, f"zip{suffix}", "must be 5 digits (or ZIP+4)"))
    return all(values[name] for name in ADDRESS_REQUIRED)


def _check_contacts(line: int, row: dict[str, str], errors: list[RowError]) -> None:
    for suffix in GROUP_SUFFIXES:
        phone = row.get(f"phone{suffix}", "")
        digits = re.sub(r"\D", "", phone)
        if phone and len(digits.removeprefix("1") if len(digits) == 11 else digits) != 10:
            errors.append(RowError(line, f"phone{suffix}", "must have 10 digits"))
        email = row.get(f"email{suffix}", "")
        if email and not EMAIL.match(email):
            errors.append(RowError(line, f"email{suffix}", "not an email address"))


def _check_identifiers(line: int, row: dict[str, str], errors: list[RowError]) -> None:
    ssn = row.get("ssn", "")
    if ssn and len(re.sub(r"\D", "", ssn)) != 9:
        errors.append(RowError(line, "ssn", "must have 9 digits"))
    licence, licence_state = row.get("driverslicenceno", ""), row.get("driverslicencestate", "")
    if bool(licence) != bool(licence_state):
        missing = "driversLicenceState" if licence else "driversLicenceNo"
        errors.append(RowError(line, missing, "driver's licence number and state go together"))
    elif licence_state and licence_state.upper() not in US_STATES:
        errors.append(RowError(line, "driversLicenceState", "not a 2-letter US state or territory"))


def check_row(line: int, row: dict[str, str]) -> list[RowError]:
    """Every problem of one data row (keys already lower-cased, values stripped)."""
    errors: list[RowError] = []
    for name in ("firstname", "lastname"):
        if not re.sub(r"[,\s]", "", row.get(name, "")):
            errors.append(RowError(line, column(name), "required"))
    dob = row.get("dob", "")
    if not dob:
        errors.append(RowError(line, "dob", "required"))
    elif not _date_ok(dob):
        errors.append(RowError(line, "dob", "must be a past date as YYYY-MM-DD"))
    gender = row.get("gender", "")
    if not gender:
        errors.append(RowError(line, "gender", "required"))
    elif gender.lower() not in GENDERS:
        errors.append(RowError(line, "gender", "must be M, F, O or U"))
    complete = [_check_address(line, row, suffix, errors) for suffix in GROUP_SUFFIXES]
    if not any(complete) and not any(e.column.lower().startswith(ADDRESS_FIELDS) for e in errors):
        errors.append(RowError(line, "addressLine1", "at least one complete address is required"))
    _check_contacts(line, row, errors)
    _check_identifiers(line, row, errors)
    return errors


def check_csv(data: bytes | str) -> CsvCheck:
    """Validate a bulk patient create CSV the way Metriport's importer reads it."""
    check = CsvCheck()
    try:
        reader = csv.reader(io.StringIO(_decode(data)))
        header = [name.strip().lower() for name in next(reader, [])]
    except (UnicodeDecodeError, csv.Error) as exc:
        check.errors.append(RowError(0, "file", f"not a UTF-8 CSV ({exc.__class__.__name__})"))
        return check
    seen: set[str] = set()
    for name in header:
        if name in seen:
            check.errors.append(RowError(0, name, "column appears twice (headers ignore case)"))
        seen.add(name)
    for name in REQUIRED_COLUMNS:
        if name not in seen:
            check.errors.append(RowError(0, column(name), "required column missing"))
    if not any(f"addressline1{suffix}" in seen for suffix in GROUP_SUFFIXES):
        check.errors.append(RowError(0, "addressLine1", "no address columns"))
    unknown = sorted(name for name in seen if name and name not in KNOWN_COLUMNS)
    if unknown:
        check.warnings.append(f"{len(unknown)} column(s) Metriport ignores: {', '.join(unknown)}")
    if check.errors:
        return check
    try:
        for record in reader:
            if not any(cell.strip() for cell in record):
                continue
            check.rows += 1
            line = reader.line_num
            if len(record) > len(header):
                check.errors.append(RowError(line, "row", f"{len(record)} cells for {len(header)} columns"))
                continue
            row = {name: value.strip() for name, value in zip(header, record)}
            check.errors.extend(check_row(line, row))
    except csv.Error as exc:
        check.errors.append(RowError(reader.line_num, "file", f"malformed CSV ({exc})"))
    if check.rows == 0:
        check.errors.append(RowError(0, "file", "no patient rows"))
    elif check.rows > MAX_ROWS:
        check.errors.append(RowError(0, "file", f"{check.rows} rows; Metriport accepts at most {MAX_ROWS}"))
    return check


def problems_markdown(check: CsvCheck) -> str:
    """The CSV's problems as a table: line, column, what is wrong; never a value."""
    lines = [
        f"# Bulk patient CSV refused: {len(check.errors)} problem(s) in {check.rows} row(s)",
        "",
        "| line | column | problem |",
        "|---|---|---|",
    ]
    lines += [f"| {e.line or 'header'} | {e.column} | {e.problem} |" for e in check.errors[:500]]
    return "\n".join(lines + [f"- {warning}" for warning in check.warnings]) + "\n"


def require_valid_csv(data: bytes | str) -> CsvCheck:
    check = check_csv(data)
    if not check.ok:
        raise InvalidCsv(check)
    return check


@dataclass(frozen=True)
class ResultRow:
    """One line of Metriport's result CSV, ids and outcome only."""

    line: int
    external_id: str | None
    metriport_id: str | None
    status: str
    reason: str | None


def parse_result_csv(data: bytes | str) -> list[ResultRow]:
    """Read the result CSV (the input columns plus metriportId, status, reason); keep ids only."""
    reader = csv.DictReader(io.StringIO(_decode(data)))
    reader.fieldnames = [name.strip().lower() for name in reader.fieldnames or []]
    missing = [name for name in RESULT_COLUMNS if name not in reader.fieldnames]
    if missing:
        raise ValueError(f"result CSV lacks column(s): {', '.join(missing)}")
    rows = []
    for record in reader:
        status = (record.get("status") or "").strip().lower()
        rows.append(
            ResultRow(
                line=reader.line_num,
                external_id=(record.get("externalid") or "").strip() or None,
                metriport_id=(record.get("metriportid") or "").strip() or None,
                status=status,
                reason=(record.get("reason") or "").strip()[:300] or None,
            )
        )
    return rows


def created_patient_ids(rows: list[ResultRow]) -> list[str]:
    return [row.metriport_id for row in rows if row.status == "succeeded" and row.metriport_id]
