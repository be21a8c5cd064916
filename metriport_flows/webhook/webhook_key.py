"""Where the webhook signing key comes from, and how it rotates without a restart.

The key is METRIPORT_WEBHOOK_KEY, else the Prefect Secret block `WEBHOOK_KEY_BLOCK` (a string, or a list
of strings, newest first). Metriport issues a new key when the webhook URL is cleared and set again, and
signs with it from then on; so when a signature matches no key it has, the receiver reads the block
again (at most every `webhook_key_refresh_seconds`), and a key the block no longer holds still verifies
for `webhook_key_grace_seconds` (messages signed before the rotation may arrive after it). The keys
themselves never reach a log, an error message or a repr.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from metriport_flows.client.signing import WebhookSigner
from metriport_flows.settings import Settings
from metriport_flows.webhook.prefect_api import configured_api_url

logger = logging.getLogger(__name__)

KeyLoader = Callable[[], Awaitable[list[str]]]


class WebhookKeyMissing(RuntimeError):
    """Neither METRIPORT_WEBHOOK_KEY nor the Prefect Secret block holds a key."""


class WebhookKeyring:
    """The keys a signature may match: the current ones, and replaced ones until their grace ends."""

    def __init__(
        self,
        keys: list[str],
        reload: KeyLoader | None = None,
        *,
        refresh_seconds: float = 2.0,
        grace_seconds: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._current = [WebhookSigner(key) for key in keys]
        self._current_keys = list(keys)
        self._retired: list[tuple[WebhookSigner, float]] = []
        self._reload = reload
        self._refresh_seconds = refresh_seconds
        self._grace_seconds = grace_seconds
        self._clock = clock
        self._loaded_at = -math.inf  # the first unknown signature reads the block at once
        self._lock = asyncio.Lock()

    def _matches(self, body: bytes, signature: str | None) -> bool:
        now = self._clock()
        self._retired = [entry for entry in self._retired if entry[1] > now]
        signers = [*self._current, *(signer for signer, _ in self._retired)]
        return any(signer.verify(body, signature) for signer in signers)

    async def verify(self, body: bytes, signature: str | None) -> bool:
        if self._matches(body, signature):
            return True
        if self._reload is None or not signature or self._clock() - self._loaded_at < self._refresh_seconds:
            return False
        async with self._lock:
            if self._clock() - self._loaded_at >= self._refresh_seconds:
                await self._refresh()
        return self._matches(body, signature)

    async def _refresh(self) -> None:
        assert self._reload is not None
        self._loaded_at = self._clock()
        try:
            keys = await self._reload()
        except WebhookKeyMissing as exc:
            logger.warning("webhook key not reloaded: %s", exc)
            return
        if keys == self._current_keys:
            return
        until = self._clock() + self._grace_seconds
        self._retired += [
            (signer, until) for key, signer in zip(self._current_keys, self._current, strict=True) if key not in keys
        ]
        self._current, self._current_keys = [WebhookSigner(key) for key in keys], keys
        logger.info("webhook key rotated: %d current key(s), %d in their grace period", len(keys), len(self._retired))

    def __repr__(self) -> str:
        return f"WebhookKeyring(keys={len(self._current)}, retired={len(self._retired)})"


def _as_keys(value: object, block: str) -> list[str]:
    keys = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    if not keys or not all(isinstance(key, str) and key for key in keys):
        raise WebhookKeyMissing(f"Prefect Secret block {block!r} holds no key (a string or a list of strings)")
    return [str(key) for key in keys]


def secret_block_loader(block: str) -> KeyLoader:
    async def load() -> list[str]:
        from prefect.blocks.system import Secret

        try:
            secret = cast("Secret[Any]", await Secret.aload(block))
        except Exception as exc:  # not found, or Prefect unreachable: say which setting is missing
            raise WebhookKeyMissing(
                f"no webhook key: set METRIPORT_WEBHOOK_KEY or create the Prefect Secret block "
                f"{block!r} ({exc.__class__.__name__})"
            ) from None
        return _as_keys(secret.get(), block)

    return load


async def load_webhook_signer(settings: Settings) -> WebhookKeyring:
    refresh, grace = settings.webhook_key_refresh_seconds, settings.webhook_key_grace_seconds
    if settings.metriport_webhook_key is not None and settings.metriport_webhook_key.get_secret_value():
        logger.info("webhook key: from METRIPORT_WEBHOOK_KEY (rotates with a restart)")
        key = settings.metriport_webhook_key.get_secret_value()
        return WebhookKeyring([key], refresh_seconds=refresh, grace_seconds=grace)
    if configured_api_url() is None:  # reading a block without it would start a temporary Prefect server
        raise WebhookKeyMissing(
            f"no webhook key: set METRIPORT_WEBHOOK_KEY, or PREFECT_API_URL with the Prefect Secret block "
            f"{settings.webhook_key_block!r}"
        )
    load = secret_block_loader(settings.webhook_key_block)
    keys = await load()
    logger.info("webhook key: from Prefect Secret block %r", settings.webhook_key_block)
    return WebhookKeyring(keys, load, refresh_seconds=refresh, grace_seconds=grace)
