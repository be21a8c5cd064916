"""Message handlers, one module per message family; importing this package registers them all."""

from metriport_flows.webhook.handlers import (  # noqa: F401  (registers F1's handlers)
    bulk,
    consolidated,
    documents,
    notifications,
)

__all__ = ["consolidated", "documents"]
