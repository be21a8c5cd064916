"""Message handlers, one module per message family, each owning its router; `metriport_router()` is the
one place that composes them."""

from metriport_flows.webhook.handlers import bulk, consolidated, documents, notifications
from metriport_flows.webhook.router import Router


def metriport_router() -> Router:
    """Every message type the dispatcher handles, and its handler."""
    return Router.compose(consolidated.router, documents.router, bulk.router, notifications.router)
