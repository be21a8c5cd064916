"""The demo reads on an 80-column terminal (one line per patient, stage and outcome always visible) and
shows every column on a wide one. Rendered with rich's recording console, no stack needed."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from metriport_devtools.demo_view import DemoPatient, cohort_progress, live_table, print_kept, short_id, summary_table
from metriport_devtools.stack import LocalStack
from metriport_flows.domain.patient_records import BundleSummary, PatientRecordsResult

BUNDLES = Path("/work/demo/.demo/bundles")
STAGES = [
    "starting",
    "waiting for documents",
    "waiting for documents (suspended)",
    "waiting for consolidated data (suspended)",
    "waiting for consolidated data (resuming)",
    "checking the bundle",
    "done",
    "failed",
]


def _patients() -> list[DemoPatient]:
    patients = []
    for index, stage in enumerate(STAGES):
        # Metriport's ids are uuidv7: patients created in one millisecond share their first 12 digits.
        patient_id = f"01a23b03-3740-7ab3-8b0c-39320{index:02d}b24fd"
        patient = DemoPatient(kind="seed" if index % 2 else "no documents", patient_id=patient_id, stage=stage)
        patient.flow_run_id = f"{index:02d}e1d2c3-0000-4000-8000-000000000000"
        patient.finished = patient.started + 12.5
        if stage == "done":
            bundle = BundleSummary(
                path=str(BUNDLES / patient_id / "consolidated-0f1e2d3c-4b5a-6978-8877-665544332211.json"),
                resource_counts={"Condition": 4, "Observation": 37},
            )
            patient.result = PatientRecordsResult(
                patient_id=patient_id,
                flow_run_id=patient.flow_run_id,
                conversion_type="json",
                documents=3,
                bundle=bundle,
            )
        if stage == "failed":
            patient.error = f"patient {patient_id} not found at Metriport"
        patients.append(patient)
    return patients


def _render(width: int, *renderables: object) -> list[str]:
    console = Console(width=width, record=True, force_terminal=False, color_system=None)
    for renderable in renderables:
        console.print(renderable)
    return console.export_text().splitlines()


@pytest.mark.parametrize("width", [80, 200])
def test_live_table_shows_every_stage_on_one_line_per_patient(width: int) -> None:
    patients = _patients()
    lines = _render(width, live_table(patients, 42.0, wide=width >= 120))
    assert all(len(line) <= width for line in lines)
    for patient in patients:
        shown = patient.patient_id if width >= 120 else short_id(patient.patient_id)
        rows = [line for line in lines if shown in line]
        assert len(rows) == 1, (patient.stage, lines)
        assert patient.stage in rows[0]


@pytest.mark.parametrize("width", [80, 200])
def test_summary_shows_every_outcome_on_one_line_per_patient(width: int) -> None:
    patients = _patients()
    lines = _render(width, summary_table(patients, width))
    assert all(len(line) <= width for line in lines)
    assert len(lines) <= len(patients) + 6, "rows folded over several lines"
    for patient in patients:
        shown = patient.patient_id if width >= 120 else short_id(patient.patient_id)
        [row] = [line for line in lines if line.lstrip("│ ").startswith(shown)]
        expected = "completed" if patient.result else "failed: patient" if patient.error else patient.stage
        assert expected in row
        if patient.result is not None:
            assert " 3 " in row and " 41 " in row
            if width >= 120:
                assert Path(patient.result.bundle.path or "").name in row


def test_cohort_progress_counts_each_stage_and_fits_80_columns() -> None:
    stages = ["done", "done", "waiting for documents (suspended)", "starting", "failed"]
    text = "\n".join(_render(80, cohort_progress("cohort-refresh run 1a2b3c4d: 7 patient-records runs", stages, 7, 9)))
    assert "3/7 ended" in text
    for part in ("not started 2", "starting 1", "waiting for documents (suspended) 1", "done 2", "failed 1"):
        assert part in text
    assert all(len(line) <= 80 for line in text.splitlines())


def test_kept_stack_lines_give_every_address_and_the_exact_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    stack = LocalStack(Path("kept"))
    stack.prefect_port, stack.emulator_port, stack.receiver_port = 4201, 8082, 8001
    console = Console(width=80, record=True, color_system=None)
    print_kept(console, stack, Path("kept"))
    text = console.export_text()
    for expected in (
        "Prefect UI   http://127.0.0.1:4201",
        "Prefect API  http://127.0.0.1:4201/api",
        "Emulator     http://127.0.0.1:8082",
        "Receiver     http://127.0.0.1:8001/metriport/webhook",
        ".venv/bin/metriport-flows status --stack kept",
        ".venv/bin/metriport-flows reconcile --stack kept",
        ".venv/bin/metriport-dev demo --stop --root kept",
    ):
        assert expected in text
    assert all(len(line) <= 80 for line in text.splitlines())
