"""`metriport-flows`: the product's commands (receiver, dispatcher, status, reconcile, replay, purge).

The app is composed here, explicitly: each command group lives in its own module and adds its commands.
"""

from __future__ import annotations

import typer

from metriport_flows.cli import ops, receiver

app = typer.Typer(
    help="Metriport patient records on Prefect: receiver, dispatcher, operations.",
    no_args_is_help=True,
    add_completion=False,
)
receiver.register(app)
ops.register(app)


def main() -> None:
    app()
