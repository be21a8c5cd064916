"""`metriport-flows receiver` (webhook receiver + dispatcher) and `metriport-flows dispatcher` (alone)."""

from __future__ import annotations

import asyncio
import signal

import typer

from metriport_flows.client.log_hygiene import configure_process_logging


def register(app: typer.Typer) -> None:
    @app.command()
    def receiver(
        host: str = typer.Option("127.0.0.1", help="Interface to listen on"),
        port: int = typer.Option(8000, help="Port to listen on"),
        dispatcher: bool = typer.Option(True, help="Run the dispatcher in this process too"),
        log_level: str = typer.Option("info"),
    ) -> None:
        """Receive Metriport webhooks on POST /metriport/webhook (GET /healthz checks the database)."""
        import uvicorn

        from metriport_flows.webhook.receiver import create_app

        configure_process_logging(log_level)
        uvicorn.run(create_app(run_dispatcher=dispatcher), host=host, port=port, log_level=log_level)

    @app.command("dispatcher")
    def dispatcher_command(log_level: str = typer.Option("info")) -> None:
        """Dispatch the inbox and deliver resolved waits, without receiving (e.g. next to several receivers)."""
        from metriport_flows.settings import get_settings
        from metriport_flows.store import get_store
        from metriport_flows.webhook.dispatcher import run_dispatcher

        configure_process_logging(log_level)

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await run_dispatcher(get_settings(), get_store(), stop)

        asyncio.run(main())
