"""`metriport-flows status | replay | purge | reconcile`: the operator's commands.

Each command reads its configuration from the environment (DATABASE_URL, METRIPORT_BASE_URL, ...) when
it runs, so one process can be pointed anywhere. Output holds ids, counts and times, never PHI.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from metriport_flows.cli.target import Target, TargetError, require_existing_database, resolve_target
from metriport_flows.settings import Settings
from metriport_flows.store import Store, open_store
from metriport_flows.webhook.operations import (
    BadDuration,
    StatusReport,
    collect_status,
    parse_duration,
    purge,
    replay,
)
from metriport_flows.webhook.prefect_api import PrefectApiMissing, require_api_url


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d"


def render_status(report: StatusReport, console: Console) -> None:
    waits = Table(title=f"Open waits ({len(report.open_waits)})")
    waits.add_column("flow run", no_wrap=True)
    for column in ("stage", "attempt", "age", "soft deadline", "hard deadline"):
        waits.add_column(column)
    for wait in report.open_waits:
        soft = wait.soft_deadline.strftime("%Y-%m-%d %H:%M:%S") + (" (passed)" if wait.past_soft_deadline else "")
        waits.add_row(
            wait.flow_run_id,
            wait.stage,
            str(wait.attempt),
            _age(wait.age_seconds),
            soft,
            wait.hard_deadline.strftime("%Y-%m-%d %H:%M:%S"),
        )
    console.print(waits)

    backlog = Table(title="Inbox by status")
    for column in ("status", "messages", "oldest"):
        backlog.add_column(column)
    for row in report.backlog:
        backlog.add_row(row.status, str(row.count), _age(row.oldest_age_seconds))
    console.print(backlog)

    hooks = report.webhooks
    if hooks.error:
        console.print(f"Metriport webhook deliveries: [yellow]{hooks.error}[/yellow]")
    else:
        colour = "red" if hooks.failed else "green"
        console.print(
            f"Metriport webhook deliveries: [{colour}]{hooks.failed or 0} failed[/{colour}], "
            f"{hooks.processing or 0} processing, enabled={hooks.enabled}"
        )

    last = report.last_reconcile
    if last is None:
        console.print("Last reconcile: [yellow]never[/yellow]")
    else:
        counts = ", ".join(f"{k}={v}" for k, v in last.report.items() if isinstance(v, int | bool) and v)
        console.print(f"Last reconcile: {_age(last.age_seconds)} ago ({counts or 'nothing to do'})")


def _older_than(value: str) -> timedelta:
    try:
        return parse_duration(value)
    except BadDuration as exc:
        raise typer.BadParameter(str(exc)) from exc


STACK_HELP = "A local stack's folder (reads its stack.json); default: ./.demo when a kept demo runs there"


def _target(stack: Path | None) -> Target:
    """What the command talks to, said on stderr (stdout stays clean for --json); a clear error else."""
    try:
        target = resolve_target(stack)
        require_existing_database(target.settings.database_url)
    except TargetError as exc:
        typer.secho(f"metriport-flows: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    typer.echo(target.describe(), err=True)
    return target


def register(app: typer.Typer) -> None:
    @app.command()
    def status(
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object for machines"),
        ask_metriport: bool = typer.Option(True, help="Ask Metriport for its failed webhook deliveries"),
        stack: Path | None = typer.Option(None, "--stack", help=STACK_HELP),
    ) -> None:
        """Open waits, the inbox backlog, failed webhook deliveries and the last reconcile pass (read-only)."""
        from metriport_flows.client.api import MedicalApi, default_retry

        settings = _target(stack).settings

        async def gather() -> StatusReport:
            store = Store(settings.database_url)  # no migration: status only reads
            if not ask_metriport:
                return await collect_status(store, None)
            # A status screen answers fast: one quick retry, not the flows' patient backoff.
            quick = default_retry(total=1, backoff_factor=0.2, max_backoff_wait=1.0)
            async with MedicalApi.from_settings(settings, retry=quick) as api:
                return await collect_status(store, api)

        report = asyncio.run(gather())
        if as_json:
            typer.echo(report.model_dump_json(indent=2))
        else:
            render_status(report, Console())

    @app.command("replay")
    def replay_command(message_id: str = typer.Argument(..., help="meta.messageId of a stored message")) -> None:
        """Dispatch a stored message again (the dispatcher picks it up at once)."""
        if not replay(open_store(Settings().database_url), message_id):
            typer.echo(f"No stored message {message_id}, or a dispatcher is working on it", err=True)
            raise typer.Exit(1)
        typer.echo(f"Message {message_id} queued for dispatch")

    @app.command("purge")
    def purge_command(
        older_than: str = typer.Option(..., "--older-than", help="e.g. 30d, 12h, 90m (units s, m, h, d, w)"),
    ) -> None:
        """Delete the bodies (PHI) of finished messages older than this; the rows stay for de-duplication."""
        age = _older_than(older_than)
        count = purge(open_store(Settings().database_url), age)
        typer.echo(f"Purged the bodies of {count} message(s) received more than {older_than} ago")

    @app.command("reconcile")
    def reconcile_command(
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON"),
        stack: Path | None = typer.Option(None, "--stack", help=STACK_HELP),
    ) -> None:
        """One reconcile pass now (the `reconcile/every-minute` deployment does this every minute)."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from metriport_flows.webhook.reconciler import reconcile_with

        target = _target(stack)
        try:
            api_url = target.prefect_api_url or require_api_url("reconcile (it resumes runs)")
        except PrefectApiMissing as exc:
            typer.secho(f"metriport-flows: {exc}", err=True, fg=typer.colors.RED)
            raise typer.Exit(2) from None
        settings = target.settings
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            report = asyncio.run(reconcile_with(settings, open_store(settings.database_url)))
        if as_json:
            typer.echo(report.model_dump_json(indent=2))
            return
        table = Table(title="Reconcile pass")
        table.add_column("what")
        table.add_column("count", justify="right")
        for name, value in report.model_dump(mode="json", exclude={"started_at"}).items():
            table.add_row(name.replace("_", " "), "-" if value is None else str(value))
        Console().print(table)
