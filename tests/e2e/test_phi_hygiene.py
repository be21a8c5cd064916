"""PHI hygiene: after the stack's runs, nothing Prefect stores names a patient.

The `seed_runs` fixture first puts two seed patients, with the emulator's exact seed demographics,
through patient-records, with replies slower than the hot window, so both stages suspend and are resumed
with run inputs (whatever other tests of the session ran before, on the same stack). Then
it scans every table and every text column of a consistent copy of the Prefect server's SQLite database
(flow run parameters, run inputs, logs, events, artifacts, states, ...), the raw database files (free
pages included), Prefect's result storage, and the inbox's waits (their resolutions and progress) for the
seed patients' names, birth dates and addresses. Every log file of the stack (`logs/*.log`), the inbox's
error columns, Prefect's tables (artifacts, events, parameters, run inputs, ...) and `stack.json` are also
scanned for those and for secrets: signed URLs (`X-Amz-Signature`, `Signature=`), the API key and the
webhook key. The scanner proves it can fail: the same scans find values planted in copies (taken after
the scan, so the copies hold the runs above).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest
from prefect.client.schemas.objects import StateType

from metriport_devtools.stack import LocalStack
from metriport_flows.store import Store
from metriport_sandbox.seed import SEED_PATIENTS
from tests.fixtures.sandbox import FACILITY
from tests.fixtures.stack import run_patient_records, wait_for_final_state

pytestmark = pytest.mark.e2e

SEEDS_RUN_HERE = ("jane", "andreas")
# The inbox columns that hold errors (the bodies hold PHI by design; they are purged, not scanned).
INBOX_ERROR_COLUMNS = {"inbox_message": {"last_error", "detail"}, "wait": {"last_delivery_error"}}
# Tables the scan must have found populated, or it proves nothing.
MUST_HAVE_ROWS = ("flow_run", "flow_run_input", "log", "events", "artifact", "flow_run_state")


class Finding(NamedTuple):
    where: str
    column: str
    value: str


def phi_values() -> set[str]:
    """Every seed patient's names (apart, together, as the C-CDA file stem), birth date, street and city."""
    values: set[str] = set()
    for patient in SEED_PATIENTS.values():
        values |= {
            patient.first_name,
            patient.last_name,
            f"{patient.first_name} {patient.last_name}",
            f"{patient.first_name}{patient.last_name}",
            patient.xml_name,
            patient.dob,
            patient.address.address_line1,
            patient.address.city,
        }
    return values


def phi_pattern(values: Iterable[str]) -> re.Pattern[bytes]:
    """Whole-word, case-sensitive matches (so "Janet" or "Smithson" are not "Jane" or "Smith")."""
    alternatives = b"|".join(re.escape(v.encode()) for v in sorted(values, key=len, reverse=True))
    return re.compile(rb"(?<![A-Za-z0-9])(" + alternatives + rb")(?![A-Za-z0-9])")


def secret_values(stack: LocalStack) -> set[str]:
    assert stack.webhook_key, "the stack has no webhook key"
    return {"X-Amz-Signature", "Signature=", stack.api_key, stack.webhook_key}


def secret_pattern(values: Iterable[str]) -> re.Pattern[bytes]:
    """Anywhere, not only whole words: a key inside a URL or a JSON string is still a leak."""
    return re.compile(b"|".join(re.escape(v.encode()) for v in sorted(values, key=len, reverse=True)))


def _text(value: object) -> bytes | None:
    if value is None or isinstance(value, int | float):
        return None
    return value if isinstance(value, bytes) else str(value).encode()


def scan_database(
    path: Path,
    pattern: re.Pattern[bytes],
    tables: set[str] | None = None,
    columns: dict[str, set[str]] | None = None,
) -> list[Finding]:
    """Every text or blob value of every (or the named) tables (or only the named columns) of a SQLite
    database."""
    findings: list[Finding] = []
    with sqlite3.connect(path) as connection:
        names = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in names:
            if tables is not None and table not in tables:
                continue
            cursor = connection.execute(f'SELECT * FROM "{table}"')
            names_of_columns = [description[0] for description in cursor.description]
            for row in cursor:
                for column, value in zip(names_of_columns, row):
                    if columns is not None and column not in columns.get(table, set()):
                        continue
                    text = _text(value)
                    for match in pattern.finditer(text or b""):
                        findings.append(Finding(table, column, match.group(0).decode()))
    return findings


def scan_files(paths: Iterable[Path], pattern: re.Pattern[bytes]) -> list[Finding]:
    """Raw bytes: catches what a table scan cannot see (free pages, the WAL, result files)."""
    return [
        Finding(str(path), "bytes", match.group(0).decode())
        for path in paths
        if path.is_file()
        for match in pattern.finditer(path.read_bytes())
    ]


def copy_database(source: Path, target: Path) -> Path:
    """A consistent copy of a live SQLite database (the WAL's committed pages included)."""
    with sqlite3.connect(source) as live, sqlite3.connect(target) as copy:
        live.backup(copy)
        copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, whatever the source used
    return target


def row_counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as connection:
        return {table: connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] for table in MUST_HAVE_ROWS}


def run_seed_patients(stack: LocalStack, api: httpx.Client, control: httpx.Client, *, suspend: bool) -> None:
    """Seed patients with their exact demographics through patient-records; with `suspend`, replies come
    after the hot window, so both stages suspend and are resumed with run inputs."""
    control.post("/config", json={"patient_limit": 1000}).raise_for_status()
    facility_id = api.post("/medical/v1/facility", json=FACILITY).raise_for_status().json()["id"]
    patient_ids = [
        api.post("/medical/v1/patient", params={"facilityId": facility_id}, json=SEED_PATIENTS[seed].demographics())
        .raise_for_status()
        .json()["id"]
        for seed in SEEDS_RUN_HERE
    ]
    slow = stack.hot_window_seconds + 1.5 if suspend else 0.0
    control.post("/config", json={"delay": [slow, slow]}).raise_for_status()
    try:
        run_ids = [run_patient_records(stack, {"patient_id": patient_id}) for patient_id in patient_ids]
        with ThreadPoolExecutor(len(run_ids)) as pool:
            runs = list(pool.map(lambda run_id: wait_for_final_state(stack, run_id, timeout=180), run_ids))
    finally:
        control.post("/config", json={"delay": [0, 0]}).raise_for_status()
    for run in runs:
        assert run.state.type == StateType.COMPLETED, (run.state.name, run.state.message)


@pytest.fixture(scope="module")
def seed_runs(local_stack: LocalStack, stack_api: httpx.Client, sandbox_control: httpx.Client) -> None:
    """The runs the scan looks at: seed patients' records, both stages suspended and resumed."""
    run_seed_patients(local_stack, stack_api, sandbox_control, suspend=True)


def test_no_phi_in_prefect_or_the_waits(local_stack: LocalStack, seed_runs: None, tmp_path: Path) -> None:
    pattern = phi_pattern(phi_values())
    copy = copy_database(local_stack.prefect_db_path, tmp_path / "prefect.db")
    counts = row_counts(copy)
    assert all(counts.values()), f"nothing to scan in {counts}"

    findings = scan_database(copy, pattern)
    prefect_files = [p for p in local_stack.prefect_home.glob("prefect.db*")]
    findings += scan_files(prefect_files, pattern)
    findings += scan_files(sorted((local_stack.prefect_home / "storage").rglob("*")), pattern)
    findings += scan_database(local_stack.inbox_db_path, pattern, tables={"wait", "heartbeat"})
    assert findings == [], f"PHI found where only ids and counts belong: {sorted(set(findings))[:20]}"


def log_files(stack: LocalStack) -> list[Path]:
    files = sorted(stack.logs_dir.glob("*.log"))
    assert {"receiver.log", "serve.log", "emulator.log", "prefect-server.log"} <= {p.name for p in files}
    return files


def scan_for_leaks(stack: LocalStack, prefect_copy: Path, log_paths: list[Path], inbox: Path) -> list[Finding]:
    """PHI and secrets in the logs, the inbox's error columns and stack.json; secrets in Prefect's tables."""
    phi = phi_pattern(phi_values())
    secrets = secret_pattern(secret_values(stack))
    findings: list[Finding] = []
    for pattern in (phi, secrets):
        findings += scan_files(log_paths, pattern)
        findings += scan_database(inbox, pattern, columns=INBOX_ERROR_COLUMNS)
        findings += scan_files([stack.root / "stack.json"], pattern)
    findings += scan_database(prefect_copy, secrets)
    return findings


def test_no_phi_or_secret_in_logs_errors_or_prefect(
    local_stack: LocalStack, seed_runs: None, stack_store: Store, tmp_path: Path
) -> None:
    bundles = [path for path in local_stack.bundle_dir.rglob("*") if path.is_file()]
    assert bundles, "no bundle was downloaded: the logs would have no signed URL to leak"
    copy = copy_database(local_stack.prefect_db_path, tmp_path / "prefect.db")
    inbox = copy_database(local_stack.inbox_db_path, tmp_path / "inbox.db")
    findings = scan_for_leaks(local_stack, copy, log_files(local_stack), inbox)
    assert findings == [], f"PHI or secrets found: {sorted(set(findings))[:20]}"


def test_the_leak_scan_finds_planted_values(local_stack: LocalStack, seed_runs: None, tmp_path: Path) -> None:
    logs = []
    for path in log_files(local_stack):
        logs.append(tmp_path / path.name)
        logs[-1].write_bytes(path.read_bytes())
    with logs[0].open("a") as log:
        log.write("GET http://127.0.0.1:1/f/x.xml?X-Amz-Signature=abc (born 1952-01-01)\n")
    copy = copy_database(local_stack.prefect_db_path, tmp_path / "prefect.db")
    with sqlite3.connect(copy) as connection:
        connection.execute(
            "UPDATE artifact SET description = ? WHERE id = (SELECT id FROM artifact LIMIT 1)",
            (f"key {local_stack.api_key}",),
        )
    inbox = copy_database(local_stack.inbox_db_path, tmp_path / "inbox.db")
    with sqlite3.connect(inbox) as connection:
        connection.execute(
            "INSERT INTO inbox_message (message_id, type, received_at, status, attempts, next_attempt_at, last_error) "
            "VALUES ('planted', 't', '2026-01-01', 'error', 1, '2026-01-01', ?)",
            (f"HTTPStatusError for url 'http://x/y?Signature=1' with {local_stack.webhook_key}",),
        )
    found = {(Path(f.where).name, f.value) for f in scan_for_leaks(local_stack, copy, logs, inbox)}
    assert {
        (logs[0].name, "X-Amz-Signature"),
        (logs[0].name, "1952-01-01"),
        ("artifact", local_stack.api_key),
        ("inbox_message", "Signature="),
        ("inbox_message", local_stack.webhook_key),
    } <= found, found


def test_scanner_finds_planted_phi(local_stack: LocalStack, seed_runs: None, tmp_path: Path) -> None:
    pattern = phi_pattern(phi_values())
    copy = copy_database(local_stack.prefect_db_path, tmp_path / "planted.db")
    with sqlite3.connect(copy) as connection:
        assert connection.execute("SELECT count(*) FROM flow_run").fetchone()[0] > 0
        connection.execute(
            "UPDATE flow_run SET parameters = json_set(parameters, '$.planted', 'Kyla Fields') "
            "WHERE id = (SELECT id FROM flow_run LIMIT 1)"
        )
        connection.execute("CREATE TABLE planted (note TEXT, blob BLOB)")
        connection.execute("INSERT INTO planted VALUES (?, ?)", ("born 1952-01-01", b"\x00Portland\x00"))
    findings = scan_database(copy, pattern)
    assert {
        Finding("flow_run", "parameters", "Kyla Fields"),
        Finding("planted", "note", "1952-01-01"),
        Finding("planted", "blob", "Portland"),
    } <= set(findings)
    assert scan_files([copy], pattern), "the raw scan sees the planted values too"
    harmless = phi_pattern({"Jane", "Smith"})
    assert not harmless.search(b"Janet Smithson, patient 01JANE, jane") and harmless.search(b'"Jane"')
