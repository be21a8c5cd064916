"""reconcile: the safety net that ends every wait, every minute (deployment `reconcile/every-minute`).

Re-dispatches stuck inbox rows, asks Metriport to re-send failed webhooks, asks Metriport about waits past
their soft deadline, re-requests expired bundles (by resolving the wait as `expired`), times out waits
past their hard deadline, and delivers what it resolved (`metriport_flows.webhook.reconciler`). The run logs
the pass's counts and returns them; no ids, no PHI. One pass by hand: `metriport-flows reconcile`.

Requires: PREFECT_API_URL (to resume runs), METRIPORT_BASE_URL, METRIPORT_API_KEY, DATABASE_URL (the
inbox and waits, shared with the receiver), BUNDLE_DIR (where a bundle it fetches is stored).
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from metriport_flows.settings import get_settings
from metriport_flows.store.store import get_store
from metriport_flows.webhook.reconciler import ReconcileReport, reconcile_with


@flow(name="reconcile", log_prints=False)
async def reconcile() -> ReconcileReport:
    """One reconcile pass over the inbox and the waits."""
    report = await reconcile_with(get_settings(), get_store())
    logger = get_run_logger()
    logger.info("Reconcile pass: %s", report.model_dump(mode="json", exclude={"started_at"}))
    if report.errors:
        logger.warning("%d call(s) failed this pass; they are retried on the next pass", report.errors)
    return report
