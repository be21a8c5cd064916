"""What the demo shows: one row per patient (ids and counts only, never names: demo output ends up in
logs too), the live table, the summary, the cohort's progress and report, and where a kept stack answers.
Tables fit the terminal: every column at WIDE_COLUMNS or more, one short line per patient below."""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich import box
from rich.console import Console, Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from metriport_devtools.saved_stack import STATE_FILE
from metriport_devtools.stack import LocalStack
from metriport_flows.domain.cohort import CohortReport
from metriport_flows.domain.patient_records import PatientRecordsResult

DEFAULT_ROOT = Path(".demo")


@dataclass
class DemoPatient:
    """One row of the demo: ids and counts only."""

    kind: str  # "seed" or "no documents"
    patient_id: str
    flow_run_id: str = ""
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    stage: str = "starting"
    result: PatientRecordsResult | None = None
    error: str | None = None

    @property
    def documents(self) -> int | None:
        """Documents the run's document query found (from its typed result)."""
        return None if self.result is None else self.result.documents

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started


# Below this width the demo shows one short line per patient; at or above it, the full tables.
WIDE_COLUMNS = 120
SHORT_ID = 8
STAGE_COLOURS = {"done": "green", "failed": "red"}


def short_id(patient_id: str) -> str:
    """The id's last digits: Metriport's uuidv7 ids begin with their creation time, so patients created
    together share the first ones."""
    return patient_id[-SHORT_ID:]


def is_wide(console: Console) -> bool:
    return console.width >= WIDE_COLUMNS


def _coloured(stage: str) -> str:
    return f"[{STAGE_COLOURS.get(stage, 'yellow')}]{stage}[/]"


def live_table(patients: list[DemoPatient], elapsed: float, wide: bool = True) -> Table:
    """Each run's stage: every column on a wide terminal; short ids and the stage, one line each, else."""
    table = Table(title=f"patient-records runs ({elapsed:.0f} s)", title_justify="left")
    if wide:
        for column in ("patient id", "kind", "flow run", "stage", "seconds"):
            table.add_column(column, justify="right" if column == "seconds" else "left", no_wrap=True)
        for p in patients:
            table.add_row(p.patient_id, p.kind, p.flow_run_id[:8], _coloured(p.stage), f"{p.seconds:.1f}")
        return table
    table.add_column("patient", no_wrap=True)
    table.add_column("stage", no_wrap=True, min_width=len("waiting for consolidated data (suspended)"))
    table.add_column("s", justify="right", no_wrap=True)
    for p in patients:
        table.add_row(short_id(p.patient_id), _coloured(p.stage), f"{p.seconds:.0f}")
    return table


def _outcome(p: DemoPatient) -> str:
    """completed, failed with its message, or the stage an unfinished run was left in."""
    if p.result:
        return "[green]completed[/]"
    return f"[red]failed: {p.error}[/]" if p.error else f"[yellow]{p.stage} (unfinished)[/]"


def summary_table(patients: list[DemoPatient], width: int = 200) -> Table:
    """One line per patient that fits `width`: ids and numbers whole, the outcome (and on a wide terminal
    the bundle file) share the rest, cut with an ellipsis; below WIDE_COLUMNS short ids and no file names
    (the demo prints the bundle folder under the table)."""
    wide = width >= WIDE_COLUMNS
    table = Table(title="Summary", title_justify="left", box=box.HEAVY_HEAD if wide else box.SIMPLE_HEAD)
    names: tuple[str, ...] = ("patient id", "outcome", "documents", "resources", "bundle file", "seconds")
    if not wide:
        names = ("patient", "outcome", "docs", "res", "s")
    ids = [p.patient_id if wide else short_id(p.patient_id) for p in patients]
    widths = {name: len(name) for name in names}
    widths[names[0]] = max([len(names[0]), *map(len, ids)])
    widths[names[-1]] = 5
    chrome = 3 * len(names) + 1  # edges, dividers (spaces in the narrow box) and each cell's padding
    rest = max(width - chrome - sum(widths.values()) + len("outcome") + (len("bundle file") if wide else 0), 20)
    bundle = min(56, rest // 2) if wide else 0
    widths["outcome"] = rest - bundle
    if wide:
        widths["bundle file"] = bundle
    for name in names:
        numeric = name not in ("patient id", "patient", "outcome", "bundle file")
        table.add_column(
            name, justify="right" if numeric else "left", no_wrap=True, overflow="ellipsis", width=widths[name] + 2
        )  # a column's width counts its padding
    for p, patient_id in zip(patients, ids, strict=True):
        r = p.result
        documents = "-" if p.documents is None else str(p.documents)
        resources = "-" if r is None else str(r.bundle.total_resources)
        row = [patient_id, _outcome(p), documents, resources]
        if wide:
            row.append("-" if r is None else Path(r.bundle.path).name if r.bundle.path else "(empty bundle)")
        table.add_row(*row, f"{p.seconds:.1f}")
    return table


def shown_path(path: Path) -> str:
    """Relative to the working directory when under it (`.demo/bundles`), else absolute."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def cohort_progress(run_label: str, stages: list[str], total: int, elapsed: float) -> Group:
    """The cohort's patient runs: a bar of finished ones and a live count per stage (fits 80 columns)."""
    counts = Counter(stages)
    counts["not started"] = total - len(stages)
    finished = counts["done"] + counts["failed"]
    order = ("not started", "starting", *sorted(set(counts) - {"not started", "starting", "done", "failed"}))
    parts = [f"{_coloured(stage)} {counts[stage]}" for stage in (*order, "done", "failed") if counts[stage]]
    bar = Table.grid(padding=(0, 1))
    bar.add_row(ProgressBar(total=max(total, 1), completed=finished, width=40), f"{finished}/{total} ended")
    return Group(f"{run_label} ({elapsed:.0f} s)", bar, Text.from_markup(" · ".join(parts)))


def cohort_table(report: CohortReport) -> Table:
    table = Table(title="Cohort refresh", title_justify="left")
    for column, value in report.counts().items():
        table.add_column(column.replace("_", " "), justify="right")
    table.add_row(*(str(value) for value in report.counts().values()))
    return table


def print_kept(console: Console, stack: LocalStack, root: Path) -> None:
    """Where the kept stack answers, and the exact commands that reach it."""
    stack_option = "" if root == DEFAULT_ROOT else f" --stack {root}"
    root_option = "" if root == DEFAULT_ROOT else f" --root {root}"
    console.print("Left running (--keep):")
    console.print(f"  Prefect UI   {stack.prefect_url}")
    console.print(f"  Prefect API  {stack.prefect_api_url}")
    console.print(f"  Emulator     {stack.emulator_url}")
    console.print(f"  Receiver     {stack.webhook_url}")
    console.print(f"  Data, logs   {shown_path(stack.root)} (inbox.db, bundles/, logs/, {STATE_FILE})")
    console.print(f"  Status:      .venv/bin/metriport-flows status{stack_option}")
    console.print(f"  Reconcile:   .venv/bin/metriport-flows reconcile{stack_option}")
    console.print(f"  Stop:        .venv/bin/metriport-dev demo --stop{root_option}")
