"""Message handlers, one module per message family; importing this package registers them all."""

from metriport_flows.webhook.handlers import consolidated, documents
from metriport_flows.webhook.handlers import bulk, notifications  # noqa: F401  (registers F1's handlers)

__all__ = ["consolidated", "documents"]
