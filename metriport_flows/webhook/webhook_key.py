"""Where the webhook signing key comes from: METRIPORT_WEBHOOK_KEY, else a Prefect Secret block.

Loaded once per process; the key itself never reaches a log, an error message or a repr.
"""

from __future__ import annotations

import logging

from metriport_flows.client.signing import WebhookSigner
from metriport_flows.settings import Settings

logger = logging.getLogger(__name__)


class WebhookKeyMissing(RuntimeError):
    """Neither METRIPORT_WEBHOOK_KEY nor the Prefect Secret block holds a key."""


async def load_webhook_signer(settings: Settings) -> WebhookSigner:
    if settings.metriport_webhook_key is not None and settings.metriport_webhook_key.get_secret_value():
        logger.info("webhook key: from METRIPORT_WEBHOOK_KEY")
        return WebhookSigner(settings.metriport_webhook_key.get_secret_value())
    from prefect.blocks.system import Secret

    from metriport_flows.prefect_api import configured_api_url

    if configured_api_url() is None:  # reading a block without it would start a temporary Prefect server
        raise WebhookKeyMissing(
            f"no webhook key: set METRIPORT_WEBHOOK_KEY, or PREFECT_API_URL with the Prefect Secret block "
            f"{settings.webhook_key_block!r}"
        )
    try:
        block = await Secret.aload(settings.webhook_key_block)
    except Exception as exc:  # not found, or Prefect unreachable: say which setting is missing
        raise WebhookKeyMissing(
            f"no webhook key: set METRIPORT_WEBHOOK_KEY or create the Prefect Secret block "
            f"{settings.webhook_key_block!r} ({exc.__class__.__name__})"
        ) from None
    value = block.get()
    if not isinstance(value, str) or not value:
        raise WebhookKeyMissing(f"Prefect Secret block {settings.webhook_key_block!r} holds no string key")
    logger.info("webhook key: from Prefect Secret block %r", settings.webhook_key_block)
    return WebhookSigner(value)
