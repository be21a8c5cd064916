"""`metriport-flows receiver` (webhook receiver + dispatcher) and `metriport-flows dispatcher` (alone).

Before anything is created (no database, no listening socket) the receiver checks what it needs: a
webhook key, a free port, and PREFECT_API_URL for its dispatcher (which resumes runs through Prefect);
a missing one is one line on stderr and exit code 2, never a traceback or a temporary Prefect server.
"""

from __future__ import annotations

import asyncio
import errno
import signal
import socket

import typer

from metriport_flows.client.log_hygiene import configure_process_logging
from metriport_flows.settings import Settings, get_settings
from metriport_flows.webhook.prefect_api import PrefectApiMissing, require_api_url
from metriport_flows.webhook.webhook_key import WebhookKeyring


def _refuse(message: str) -> typer.Exit:
    typer.secho(f"metriport-flows: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(2)


def _webhook_signer(settings: Settings) -> WebhookKeyring:
    from metriport_flows.webhook.webhook_key import WebhookKeyMissing, load_webhook_signer

    try:
        return asyncio.run(load_webhook_signer(settings))
    except WebhookKeyMissing as exc:
        raise _refuse(str(exc)) from None


def _check_port_free(host: str, port: int) -> None:
    """Bind and release the port, so a busy one is reported before startup, not after it."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            why = "is already in use (another receiver?)" if exc.errno == errno.EADDRINUSE else f"cannot be used: {exc}"
            raise _refuse(f"port {port} on {host} {why}") from None


def _require_prefect(what: str) -> None:
    try:
        require_api_url(what)
    except PrefectApiMissing as exc:
        raise _refuse(str(exc)) from None


def register(app: typer.Typer) -> None:
    @app.command()
    def receiver(
        host: str = typer.Option("127.0.0.1", help="Interface to listen on"),
        port: int = typer.Option(8000, help="Port to listen on"),
        dispatcher: bool = typer.Option(True, help="Run the dispatcher in this process too"),
        workers: int = typer.Option(
            1, min=1, help="Processes sharing the socket, each a receiver with its dispatcher on the one inbox"
        ),
        log_level: str = typer.Option("info"),
    ) -> None:
        """Receive Metriport webhooks on POST /metriport/webhook (GET /healthz checks the database)."""
        import uvicorn

        from metriport_flows.webhook.receiver import create_app

        if workers > 1 and not dispatcher:
            raise _refuse("--workers runs a dispatcher in every process; for receivers alone, start one per port")
        settings = get_settings()
        if dispatcher:
            _require_prefect("the dispatcher (it resumes the runs; or start with --no-dispatcher)")
        signer = _webhook_signer(settings)
        _check_port_free(host, port)
        configure_process_logging(log_level)
        if workers > 1:
            factory = "metriport_flows.webhook.receiver:app_from_environment"
            uvicorn.run(factory, factory=True, workers=workers, host=host, port=port, log_level=log_level)
            return
        app = create_app(settings, run_dispatcher=dispatcher, signer=signer)
        uvicorn.run(app, host=host, port=port, log_level=log_level)

    @app.command("dispatcher")
    def dispatcher_command(log_level: str = typer.Option("info")) -> None:
        """Dispatch the inbox and deliver resolved waits, without receiving (e.g. next to several receivers)."""
        from metriport_flows.store import get_store
        from metriport_flows.webhook.dispatcher import run_dispatcher

        _require_prefect("the dispatcher (it resumes the runs)")
        configure_process_logging(log_level)

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await run_dispatcher(get_settings(), get_store(), stop)

        asyncio.run(main())
