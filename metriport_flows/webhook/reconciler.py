"""The reconciler: the pass that ends every wait, whatever Metriport or the network did.

Metriport never retries a failed webhook by itself, a document query can stay stuck forever, a bundle URL
lives three minutes, and a dispatcher can die holding a claim. One `reconcile_once` pass:
  1. dispatches inbox rows left pending for too long (no dispatcher running) and rows whose claim lease
     expired (their dispatcher died); a row whose owner still extends its lease is never taken over;
  2. calls `POST /settings/webhook/retry` when `GET /settings/webhook` reports failed deliveries (the
     re-sent messages carry no `meta.data`; the dispatcher correlates them by requestId / patient);
  3. brings back runs that crashed, or whose process went silent, under the same id (bounded; see
     `revival.py`), and closes (`abandoned`) the open waits past their soft deadline whose run has ended another way
     (failed or cancelled after registering it): nobody asks about them again;
     for the other open waits past their soft deadline asks Metriport (`GET /document/query`, the consolidated
     query and its stored webhook) and resolves what has finished; a consolidated bundle is downloaded at
     once, and a URL that expired (or a query Metriport forgot) resolves as `expired`, so the flow
     re-requests with a new pause key;
  4. resolves waits past their hard deadline as `timeout`, so the run ends Failed with a clear message.
     Deadlines count from the start call's answer; a wait whose run has not asked Metriport yet (it waits
     for a rate-limit slot, or crashed and waits for its revival) is left to that run;
  5. delivers every resolved wait not yet delivered (resume, through the dispatcher's delivery).
Resolution is compare-and-set in the store, so two passes (or a pass and the dispatcher) resolve a wait
once. The report holds counts only; it is the `reconcile` heartbeat's detail.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial

import httpx
from pydantic import BaseModel, Field

from metriport_flows.client.errors import MetriportError, NotFound, UrlExpired
from metriport_flows.domain.stages import (
    RESULT_MODELS,
    ConsolidatedReady,
    DocumentsReady,
    Outcome,
    ResolvedBy,
    Stage,
    StageResult,
)
from metriport_flows.settings import Settings
from metriport_flows.store import Store, Wait
from metriport_flows.webhook.delivery import Delivery, deliver_due
from metriport_flows.webhook.dispatcher import Dispatcher
from metriport_flows.webhook.handlers import metriport_router
from metriport_flows.webhook.handlers.consolidated import bundle_path
from metriport_flows.webhook.protocols import Gateway, Metriport
from metriport_flows.webhook.revival import revive_crashed_runs

logger = logging.getLogger(__name__)

HEARTBEAT = "reconcile"
# A row due this long means no dispatcher is taking it (a claimed row is stuck only when its lease expired).
STUCK_AFTER = timedelta(seconds=60)
MAX_DISPATCH_BATCHES = 20
BUNDLE_EXTENSIONS = {"json": "json", "pdf": "pdf", "html": "html"}
CONTENT_TYPES = {"json": "application/json", "pdf": "application/pdf", "html": "text/html"}
CALL_ERRORS = (MetriportError, httpx.HTTPError)


class ReconcileReport(BaseModel):
    """What one pass did: counts only (no ids, no PHI), so it can go in logs and the heartbeat."""

    started_at: datetime
    seconds: float = 0.0
    messages_requeued: int = Field(0, description="Inbox rows stuck pending, or claimed under an expired lease")
    messages_dispatched: int = Field(0, description="Inbox rows this pass dispatched itself")
    webhooks_failed: int | None = Field(None, description="Failed deliveries Metriport reported; None: not asked")
    webhook_retry_requested: bool = False
    waits_checked: int = Field(0, description="Open waits past their soft deadline asked about")
    still_processing: int = Field(0, description="Metriport says still working; left open")
    resolved_ready: int = 0
    resolved_failed: int = 0
    resolved_expired: int = Field(0, description="Consolidated URL expired or query forgotten: re-request")
    timed_out: int = Field(0, description="Past the hard deadline: resolved as timeout")
    not_asked: int = Field(0, description="Past a deadline before their run asked Metriport: left to the run")
    abandoned: int = Field(0, description="Open waits whose run had ended (failed, cancelled): closed")
    silent: int = Field(0, description="Running runs without heartbeats (process gone): marked Crashed")
    revived: int = Field(0, description="Crashed runs scheduled again under the same id")
    revivals_given_up: int = Field(0, description="Crashed runs past the revival bound: failed")
    lost_races: int = Field(0, description="Someone else resolved the wait first (compare-and-set)")
    delivered: int = Field(0, description="Resolved waits handed to their runs")
    errors: int = Field(0, description="Calls that failed this pass; retried next pass")
    wait_errors: int = Field(0, description="Waits whose check raised unexpectedly (recorded on the wait)")
    step_errors: int = Field(0, description="Steps of the pass that failed; the others still ran")

    @property
    def resolved(self) -> int:
        return self.resolved_ready + self.resolved_failed + self.resolved_expired + self.timed_out


async def documents_status(api: Metriport, wait: Wait) -> DocumentsReady | None:
    """The documents stage's result from `GET /document/query`, or None while it is still processing."""
    progress = await api.get_document_query(wait.patient_id or "")
    download, convert = progress.download, progress.convert
    statuses = {p.status for p in (download, convert) if p is not None}
    if not statuses or progress.is_processing:
        return None
    noted = wait.progress or {}
    ready = partial(
        DocumentsReady,
        request_id=wait.request_id or progress.request_id,
        resolved_by=ResolvedBy.reconciler,
        documents=noted.get("documents", download.total if download else None),
        converted=noted.get("convertible", convert.total if convert else None),
    )
    if progress.request_id and wait.request_id and progress.request_id != wait.request_id:
        return ready(outcome=Outcome.ready, detail="a newer document query has finished")
    if "failed" in statuses:
        return ready(outcome=Outcome.failed, detail="GET /document/query reports the query failed")
    return ready(outcome=Outcome.ready, detail="GET /document/query reports the query finished")


async def consolidated_status(api: Metriport, settings: Settings, wait: Wait) -> ConsolidatedReady | None:
    """The consolidated stage's result from the query's status and its stored webhook (the bundle is
    downloaded now, while the URL may still be valid), or None while it is still processing."""
    patient_id, request_id = wait.patient_id or "", wait.request_id
    if not request_id:
        return None
    ready = partial(ConsolidatedReady, request_id=request_id, resolved_by=ResolvedBy.reconciler)
    try:
        query = await api.get_consolidated_query(patient_id, request_id)
        status = query.status
    except NotFound:
        status = None  # a newer query erased it from the list; its stored webhook may still be there
    if status == "processing":
        return None
    if status == "failed":
        return ready(outcome=Outcome.failed, detail="Metriport reports the query failed")
    try:
        hook = await api.get_consolidated_webhook(patient_id, request_id)
    except NotFound:
        return ready(outcome=Outcome.expired, detail="Metriport no longer knows this query")
    if hook.status == "failed":
        return ready(outcome=Outcome.failed, detail="the stored webhook reports failed")
    if hook.status != "completed":
        return None
    if not hook.file_url:
        return ready(outcome=Outcome.ready, empty=True, detail="Metriport sent an empty bundle")
    kind = hook.conversion_type if hook.conversion_type in BUNDLE_EXTENSIONS else "json"
    dest = bundle_path(settings.bundle_dir, patient_id, request_id, BUNDLE_EXTENSIONS[kind])
    try:
        stored = await api.download(hook.file_url, dest)
    except UrlExpired:
        return ready(outcome=Outcome.expired, detail="the bundle URL expired before it was fetched")
    return ready(
        outcome=Outcome.ready,
        bundle_path=str(stored.path),
        sha256=stored.sha256,
        size_bytes=stored.size,
        content_type=stored.content_type or CONTENT_TYPES[kind],
        detail="fetched by the reconciler",
    )


def timeout_result(wait: Wait, now: datetime) -> StageResult:
    waited = int((now - wait.created_at).total_seconds())
    return RESULT_MODELS[Stage(wait.stage)](
        outcome=Outcome.timeout,
        request_id=wait.request_id,
        resolved_by=ResolvedBy.reconciler,
        detail=f"no answer from Metriport for the {wait.stage} stage after {waited} s (hard deadline)",
    )


def _count(report: ReconcileReport, result: StageResult, won: bool) -> None:
    if not won:
        report.lost_races += 1
    elif result.outcome == Outcome.ready:
        report.resolved_ready += 1
    elif result.outcome == Outcome.failed:
        report.resolved_failed += 1
    elif result.outcome == Outcome.expired:
        report.resolved_expired += 1
    else:
        report.timed_out += 1


async def close_waits_of_ended_runs(store: Store, gateway: Gateway, now: datetime, report: ReconcileReport) -> None:
    """Open waits past their soft deadline whose run ended another way are closed, so neither the
    soft-deadline checks nor delivery look at them again."""
    for wait in store.waits_past_soft_deadline(now):
        try:
            run = await gateway.read_flow_run(wait.flow_run_id)
            if run is not None and run.has_ended and store.abandon_wait(wait.id):
                report.abandoned += 1
                logger.info("Reconciler: wait %s abandoned (run %s is %s)", wait.id, wait.flow_run_id, run.state_type)
        except Exception as exc:  # Prefect unreachable: the wait is looked at as usual
            report.errors += 1
            logger.warning("Reconciler could not read the run of wait %s: %s", wait.id, type(exc).__name__)


async def check_soft_deadlines(
    store: Store, api: Metriport, settings: Settings, now: datetime, report: ReconcileReport
) -> None:
    """Each wait on its own: whatever one wait's check raises (a proxy's HTML page, a folder that cannot
    be created) is recorded on that wait and counted, and the pass goes on with the others."""
    for wait in store.waits_past_soft_deadline(now):
        if wait.stage not in (Stage.documents.value, Stage.consolidated.value) or not wait.patient_id:
            continue  # no status endpoint for bulk jobs: only the hard deadline ends them
        if not wait.request_id:
            report.not_asked += 1  # nothing to look up yet; an earlier query's answer is not this wait's
            continue
        report.waits_checked += 1
        try:
            await check_wait(store, api, settings, wait, report)
        except CALL_ERRORS as exc:
            report.errors += 1
            logger.warning("Reconciler could not check wait %s: %s", wait.id, type(exc).__name__)
        except Exception as exc:
            report.wait_errors += 1
            logger.warning("Reconciler: checking wait %s raised %s", wait.id, type(exc).__name__)
            store.note_wait_check_error(wait.id, f"{type(exc).__name__}: {exc}")


async def check_wait(store: Store, api: Metriport, settings: Settings, wait: Wait, report: ReconcileReport) -> None:
    if wait.stage == Stage.documents.value:
        result: StageResult | None = await documents_status(api, wait)
    else:
        result = await consolidated_status(api, settings, wait)
    if result is None:
        report.still_processing += 1
        return
    _count(report, result, store.resolve_wait(wait.id, result))


async def check_hard_deadlines(store: Store, gateway: Gateway, now: datetime, report: ReconcileReport) -> None:
    """Past the hard deadline a wait ends as `timeout`, unless Metriport was never asked and its run is
    still coming to ask (running towards its start call, or crashed and waiting for its revival): that
    run's own end or revival bound closes it (`abandoned`)."""
    for wait in await asyncio.to_thread(store.waits_past_hard_deadline, now):
        try:
            if not wait.request_id and await _yet_to_ask(gateway, wait):
                report.not_asked += 1
                continue
            result = timeout_result(wait, now)
            _count(report, result, await asyncio.to_thread(store.resolve_wait, wait.id, result))
        except Exception as exc:  # the next wait is still timed out
            report.wait_errors += 1
            logger.warning("Reconciler could not time out wait %s: %s", wait.id, type(exc).__name__)


async def _yet_to_ask(gateway: Gateway, wait: Wait) -> bool:
    run = await gateway.read_flow_run(wait.flow_run_id)
    return run is not None and not run.has_ended and not (run.is_paused and run.pause_key == wait.pause_key)


async def retry_failed_webhooks(api: Metriport, report: ReconcileReport) -> None:
    try:
        status = await api.get_webhook_status()
        report.webhooks_failed = status.webhook_requests_failed or 0
        if report.webhooks_failed:
            await api.retry_webhooks()
            report.webhook_retry_requested = True
    except CALL_ERRORS as exc:
        report.errors += 1
        logger.warning("Reconciler could not check or retry failed webhooks: %s", type(exc).__name__)


async def redispatch_stuck(
    store: Store, api: Metriport, gateway: Gateway, settings: Settings, now: datetime, report: ReconcileReport
) -> None:
    """Dispatch here the rows nobody dispatched in time and the rows whose owner let its lease expire
    (claims stay exclusive and owned, so a live dispatcher's row is never handled twice)."""
    report.messages_requeued = len(store.stuck_messages(now, STUCK_AFTER))
    if not report.messages_requeued:
        return
    dispatcher = Dispatcher(store, settings, gateway, api, metriport_router())
    for _ in range(MAX_DISPATCH_BATCHES):
        claimed = await dispatcher.dispatch_once(now)
        report.messages_dispatched += claimed
        if claimed < dispatcher.batch_size:
            break


async def deliver_resolved(store: Store, gateway: Gateway, report: ReconcileReport) -> None:
    """Hand every due resolved wait to its run (resume when it is suspended on the wait's key)."""
    counts = await deliver_due(store, gateway)
    report.delivered = counts.get(Delivery.delivered.value, 0)


async def reconcile_once(
    store: Store, api: Metriport, gateway: Gateway, settings: Settings, now: datetime | None = None
) -> ReconcileReport:
    """One pass (see the module docstring); records the `reconcile` heartbeat with the report."""
    now = now or datetime.now(UTC)
    report = ReconcileReport(started_at=datetime.now(UTC))
    steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("redispatch", lambda: redispatch_stuck(store, api, gateway, settings, now, report)),
        ("webhook retry", lambda: retry_failed_webhooks(api, report)),
        ("crashed runs", lambda: revive_crashed_runs(store, gateway, settings, now, report)),
        ("ended runs", lambda: close_waits_of_ended_runs(store, gateway, now, report)),
        ("soft deadlines", lambda: check_soft_deadlines(store, api, settings, now, report)),
        ("hard deadlines", lambda: check_hard_deadlines(store, gateway, now, report)),
        ("delivery", lambda: deliver_resolved(store, gateway, report)),
    ]
    for name, step in steps:
        try:  # one failing step never skips the ones after it (the hard deadline above all)
            await step()
        except Exception as exc:
            report.step_errors += 1
            logger.warning("Reconcile step %s failed: %s", name, type(exc).__name__)
    report.seconds = round((datetime.now(UTC) - report.started_at).total_seconds(), 3)
    store.record_heartbeat(HEARTBEAT, report.model_dump(mode="json"))
    logger.info("Reconcile pass: %s", report.model_dump(mode="json", exclude={"started_at"}))
    return report


async def reconcile_with(settings: Settings, store: Store) -> ReconcileReport:
    """One pass with this process's own Metriport client and Prefect gateway (the flow and the CLI)."""
    from metriport_flows.client.api import MedicalApi
    from metriport_flows.webhook.prefect_gateway import PrefectGateway

    async with (
        PrefectGateway(settings.prefect_max_concurrent_calls) as gateway,
        MedicalApi.from_settings(settings) as api,
    ):
        return await reconcile_once(store, api, gateway, settings)
