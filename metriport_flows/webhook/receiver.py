"""The webhook receiver: verify, store, answer 200 — nothing slow before the answer.

Metriport gives a receiver 4 s and never retries by itself, so the handler only reads the raw bytes
(bounded), checks the HMAC on them, reads the envelope (`client/envelope.py`: ids, not the typed message),
answers `ping`, and inserts the message into the inbox keyed by its messageId (a duplicate is a no-op),
in batches with the webhooks that arrive meanwhile (`inbox_writer.py`): the answer still waits for its
row's commit. Everything else (correlation, downloads, Prefect calls) is the dispatcher's job, which runs
as a background task of this app unless `run_dispatcher=False`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from metriport_flows.client.envelope import InvalidMessage, parse_envelope
from metriport_flows.client.signing import SIGNATURE_HEADER
from metriport_flows.settings import Settings, get_settings
from metriport_flows.store import Store, open_store
from metriport_flows.store.inbox import NewMessage, rejected_message_id, unstorable_field
from metriport_flows.webhook.inbox_writer import InboxWriter
from metriport_flows.webhook.webhook_key import WebhookKeyring, load_webhook_signer

logger = logging.getLogger(__name__)

WEBHOOK_PATH = "/metriport/webhook"


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing it as soon as it passes `limit` bytes (never buffering more)."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


async def _reject(store: Store, body: bytes, reason: str) -> JSONResponse:
    """A signed body that can never be stored as a message: kept as a rejected row and refused with 400
    once. Metriport counts the 400 as a failed delivery, so the reconciler asks for it again; that
    re-delivery finds the row and gets 200, so the body is not asked for again and again."""
    inserted = await run_in_threadpool(store.insert_rejected, body=body, reason=reason)
    message_id = rejected_message_id(body)
    logger.warning("webhook rejected: %s (kept as %s)", reason, message_id)
    if inserted:
        return _error(400, reason)
    return JSONResponse({"received": message_id, "duplicate": True, "rejected": reason})


def create_app(
    settings: Settings | None = None,
    store: Store | None = None,
    run_dispatcher: bool = True,
    signer: WebhookKeyring | None = None,
) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.store = store or await asyncio.to_thread(open_store, settings.database_url)
        app.state.signer = signer or await load_webhook_signer(settings)
        new_messages = asyncio.Event()
        app.state.inbox = InboxWriter(app.state.store, on_new=new_messages.set)
        dispatcher_task = None
        if run_dispatcher:
            from metriport_flows.webhook.dispatcher import run_dispatcher as run

            app.state.dispatcher_stop = asyncio.Event()
            dispatcher_task = asyncio.create_task(
                run(settings, app.state.store, app.state.dispatcher_stop, new_messages)
            )
        try:
            yield
        finally:
            await app.state.inbox.close()
            if dispatcher_task is not None:
                app.state.dispatcher_stop.set()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(dispatcher_task, timeout=10)
            if store is None:
                app.state.store.dispose()

    app = FastAPI(title="Metriport webhook receiver", lifespan=lifespan, docs_url=None, redoc_url=None)

    async def receive(request: Request) -> JSONResponse:
        try:
            body = await read_body(request, settings.receiver_max_body_bytes)
        except BodyTooLarge:
            return _error(413, "body too large")
        if not await request.app.state.signer.verify(body, request.headers.get(SIGNATURE_HEADER)):
            logger.warning("webhook refused: bad or missing signature (%d bytes)", len(body))
            return _error(401, "invalid signature")
        try:
            message = parse_envelope(body)
        except InvalidMessage as exc:
            return await _reject(request.app.state.store, body, str(exc))
        if message.ping is not None:
            return JSONResponse({"pong": message.ping})
        new = NewMessage(
            message.message_id,
            message.type,
            body,
            message.request_id,
            message.patient_id,
            message.flow_run_id,
            message.stage,
        )
        unstorable = unstorable_field(new.ids())
        if unstorable is not None:
            return await _reject(request.app.state.store, body, unstorable)
        try:
            inserted = await request.app.state.inbox.store_message(new)
        except SQLAlchemyError as exc:
            logger.error("webhook %s not stored: %s", message.message_id, type(exc).__name__)
            return _error(503, "inbox unavailable, deliver again later")
        logger.info("webhook %s %s stored=%s", message.type, message.message_id, inserted)
        return JSONResponse({"received": message.message_id, "duplicate": not inserted})

    # A plain Starlette route: the handler reads raw bytes, so FastAPI's parameter solving (it parses the
    # headers and cookies of every request) was a fifth of the receiver's CPU per webhook for nothing.
    app.router.add_route(WEBHOOK_PATH, receive, methods=["POST"], include_in_schema=False)

    @app.get("/healthz")
    async def healthz(request: Request) -> JSONResponse:
        try:
            await run_in_threadpool(request.app.state.store.ping)
        except Exception as exc:  # any database failure means unhealthy; the type is enough to say why
            return JSONResponse({"status": "unhealthy", "database": exc.__class__.__name__}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    return app


def app_from_environment() -> FastAPI:
    """The receiver with its dispatcher, configured from the environment: what each uvicorn worker
    process builds when the receiver runs as several processes on one socket (`--workers`)."""
    from metriport_flows.client.log_hygiene import quiet_http_logs

    quiet_http_logs()
    return create_app(get_settings())
