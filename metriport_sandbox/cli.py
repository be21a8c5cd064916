"""`metriport-sandbox`: run the local Metriport emulator with uvicorn."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

app = typer.Typer(help="A faithful local Metriport Medical API.", add_completion=False)


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind")] = 8081,
    mode: Annotated[str, typer.Option(help="sandbox (canned seed data) or production behaviour")] = "sandbox",
    seed: Annotated[int, typer.Option(help="Seed for every random choice (ids, delays, faults)")] = 0,
    delay: Annotated[str, typer.Option(help="Random delay MIN,MAX seconds before async jobs finish")] = "0,5",
    faults: Annotated[str, typer.Option(help="Fault SPEC, e.g. duplicate=0.3,drop=0.1,api_5xx=0.1")] = "",
    public_url: Annotated[str | None, typer.Option(help="Base URL put in signed URLs")] = None,
) -> None:
    """Start a faithful local Metriport Medical API (webhooks, signed URLs, faults)."""
    import uvicorn

    from metriport_sandbox.app import create_app
    from metriport_sandbox.config import SandboxConfig, parse_delay
    from metriport_sandbox.faults import FaultScenario

    if mode not in ("sandbox", "production"):
        raise typer.BadParameter("mode must be sandbox or production")
    try:
        FaultScenario.parse(faults)
        config = SandboxConfig(
            mode=mode,
            seed=seed,
            delay=parse_delay(delay),
            faults=faults,
            public_url=public_url or f"http://{host}:{port}",
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(f"Metriport emulator ({mode}) on http://{host}:{port}  control plane: /_sandbox")
    # httpx logs every webhook it posts, with its URL; the emulator keeps quiet like the product does.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning")


def main() -> None:
    app()
