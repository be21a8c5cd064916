"""The keyring: a new key is picked up without a restart, a replaced key verifies for its grace period,
an unknown signature re-reads the keys at most every refresh interval."""

from __future__ import annotations

from dataclasses import dataclass

from metriport_flows.client.signing import WebhookSigner
from metriport_flows.webhook.webhook_key import WebhookKeyring

BODY = b'{"meta":{"messageId":"m-1"}}'


@dataclass
class KeyBlock:
    """The Secret block's value as the keyring reads it; counts the reads."""

    keys: list[str]
    reads: int = 0

    async def load(self) -> list[str]:
        self.reads += 1
        return list(self.keys)


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


def _sig(key: str) -> str:
    return WebhookSigner(key).sign(BODY)


async def test_a_rotated_key_is_read_again_and_the_old_one_verifies_during_its_grace() -> None:
    block, clock = KeyBlock(["old"]), Clock()
    keyring = WebhookKeyring(["old"], block.load, refresh_seconds=2, grace_seconds=60, clock=clock)
    clock.now = 5
    block.keys = ["new"]
    assert await keyring.verify(BODY, _sig("new")) and block.reads == 1
    assert await keyring.verify(BODY, _sig("old"))  # signed before the rotation, arriving after it
    clock.now = 70
    assert not await keyring.verify(BODY, _sig("old"))
    assert await keyring.verify(BODY, _sig("new"))


async def test_bad_signatures_read_the_block_at_most_once_per_interval() -> None:
    block, clock = KeyBlock(["k"]), Clock()
    keyring = WebhookKeyring(["k"], block.load, refresh_seconds=2, grace_seconds=60, clock=clock)
    clock.now = 10
    for _ in range(20):
        assert not await keyring.verify(BODY, "0" * 64)
    assert block.reads == 1
    clock.now = 12
    assert not await keyring.verify(BODY, "0" * 64) and block.reads == 2
    assert not await keyring.verify(BODY, None) and block.reads == 2


async def test_a_block_holding_both_keys_verifies_both_and_reprs_hold_no_key() -> None:
    keyring = WebhookKeyring(["new-s3cr3t", "old-s3cr3t"])
    assert await keyring.verify(BODY, _sig("new-s3cr3t")) and await keyring.verify(BODY, _sig("old-s3cr3t"))
    assert "s3cr3t" not in repr(keyring)
