"""`metriport-dev`: the local stack for people: `metriport-dev demo` runs the whole system on this machine."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import typer
from rich.console import Console

from metriport_sandbox.seed import SEED_PATIENTS

app = typer.Typer(
    help="The local stack: Prefect, the emulator, the receiver and the deployments.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def local_stack() -> None:
    """The local stack: Prefect, the emulator, the receiver and the deployments, on this machine."""


@app.command()
def demo(
    keep: bool = typer.Option(False, "--keep", help="Leave the stack running to explore the Prefect UI"),
    patients: str = typer.Option(
        ",".join(SEED_PATIENTS), "--patients", help="Comma-separated seed patients (jane, chris, ollie, andreas, kyla)"
    ),
    others: int = typer.Option(2, "--others", min=0, max=2, help="Extra patients without documents"),
    root: Path = typer.Option(Path(".demo"), "--root", help="Where the stack keeps its files and logs"),
    hot_window: float = typer.Option(
        30.0,
        "--hot-window",
        min=0,
        help="Seconds a wait watches in-process before suspending (e.g. 2 to see Suspended runs in the UI)",
    ),
    stop: bool = typer.Option(False, "--stop", help="Stop a stack a previous `demo --keep` left running"),
    cohort: bool = typer.Option(
        True, "--cohort/--no-cohort", help="Then refresh the same patients as a cohort-refresh run"
    ),
    scale_out: bool = typer.Option(
        False,
        "--scale-out",
        help="Prefect server and inbox on PostgreSQL (SCALE_OUT_POSTGRES_URL), two receivers, two work-pool workers",
    ),
) -> None:
    """Start everything, fetch seven patients' records through Prefect, show them, stop."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=180)  # a log file: keep ids and paths on one line
    if stop:
        from metriport_devtools.saved_stack import stop_saved

        stopped = stop_saved(root)
        console.print(f"Stopped: {', '.join(stopped)}" if stopped else f"No demo stack running under {root}")
        return
    seed_keys = [key.strip().lower() for key in patients.split(",") if key.strip()]
    unknown = [key for key in seed_keys if key not in SEED_PATIENTS]
    if unknown:
        raise typer.BadParameter(f"not seed patients: {', '.join(unknown)}", param_hint="--patients")
    from metriport_devtools.demo import run_demo

    # A SIGTERM (not only Ctrl-C) must unwind through the stack's cleanup too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    outcome, report = run_demo(
        console,
        root=root,
        keep=keep,
        seed_keys=seed_keys,
        others=others,
        hot_window_seconds=hot_window,
        cohort=cohort,
        scale_out=scale_out,
    )
    cohort_failed = cohort and (report is None or report.failed or report.waiting or report.not_started)
    if any(patient.result is None for patient in outcome) or cohort_failed:
        raise typer.Exit(1)


def main() -> None:
    app()
