"""`make chaos`: a cohort refresh of N patients (500 by default) on a fresh local stack with Metriport's
faults on together, the receiver SIGKILLed 3 times, the serve process once and the Prefect server once;
then a table of every check (`metriport_devtools/chaos_audit.py`). Exits 1 on any loss.

Run: .venv/bin/python bench/chaos.py [--patients 500] [--keep]   (about 20 minutes for 500 on 2 cores)
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from metriport_devtools.chaos import ChaosPlan, ChaosRun, run_chaos
from metriport_devtools.chaos_audit import Audit, audit
from metriport_devtools.stack import LocalStack

console = Console()


def table(plan: ChaosPlan, checks: Audit) -> Table:
    out = Table(title=f"Chaos run: {plan.patients} patients, faults {plan.faults}", title_justify="left")
    out.add_column("check")
    out.add_column("figure", overflow="fold")
    out.add_column("ok")
    for name, figure, passed in checks.rows:
        out.add_row(name, figure, "[green]yes[/]" if passed else "[red]NO[/]")
    return out


def main(
    patients: int = typer.Option(500, help="Patients in the cohort"),
    receiver_kills: int = typer.Option(3),
    serve_kills: int = typer.Option(1),
    server_restarts: int = typer.Option(1),
    hot_window: float = typer.Option(30.0, help="Seconds a wait watches before suspending"),
    timeout_minutes: float = typer.Option(90.0),
    keep: bool = typer.Option(False, help="Keep the stack's folder (logs, databases) afterwards"),
) -> None:
    plan = ChaosPlan(
        patients=patients,
        receiver_kills=receiver_kills,
        serve_kills=serve_kills,
        server_restarts=server_restarts,
        hot_window_seconds=hot_window,
        timeout_seconds=timeout_minutes * 60,
    )
    root = Path(tempfile.mkdtemp(prefix="chaos-"))
    last_print = 0.0

    def progress(run: ChaosRun, ended: int) -> None:
        nonlocal last_print
        if time.monotonic() - last_print >= 30:
            last_print = time.monotonic()
            done = ", ".join(w for _, w in run.disruptions_done) or "none yet"
            console.print(f"{ended}/{plan.patients} runs ended · cohort {run.cohort_state} · killed: {done}")

    with LocalStack(root / "stack", hot_window_seconds=hot_window, delay=(0.0, 5.0)) as stack:
        console.print(f"stack up in {root} (Prefect UI {stack.prefect_url}); starting {patients} patients")
        run = asyncio.run(run_chaos(stack, plan, progress))
        console.print(f"runs followed for {run.seconds:.0f} s; auditing")
        checks = asyncio.run(audit(stack, run))
    console.print(table(plan, checks))
    for problem in checks.problems[:50]:
        console.print(f"[red]{problem}[/]")
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    raise typer.Exit(0 if checks.ok else 1)


if __name__ == "__main__":
    typer.run(main)
