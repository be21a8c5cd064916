"""Message handlers, one module per message family; importing this package registers them all."""

from metriport_flows.webhook.handlers import consolidated, documents

__all__ = ["consolidated", "documents"]
