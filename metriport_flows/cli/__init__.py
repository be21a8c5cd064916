"""`metriport-flows`: one Typer app; each command group lives in its own module."""

from __future__ import annotations

import typer

app = typer.Typer(help="Metriport patient records on Prefect: emulator, receiver, ops.", no_args_is_help=True)


def _register() -> None:
    from metriport_flows.cli import demo, ops, receiver, sandbox

    for module in (sandbox, receiver, ops, demo):
        module.register(app)


def main() -> None:
    _register()
    app()
