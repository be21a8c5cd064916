"""Ids in Metriport's formats (uuidv7 for records and requests, uuidv4 for messages, nanoid for keys),
drawn from a seeded `random.Random` so a run with the same seed hands out the same random parts."""

from __future__ import annotations

import random
import time
import uuid

NANOID_ALPHABET = "useandom-26T198340PX75pxJACKVERYMINDBUSHWOLF_GQZbfghjklqvwyzrict"


def uuid7(rng: random.Random, now_ms: int | None = None) -> str:
    """A version-7 uuid: 48-bit Unix milliseconds then 74 random bits."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= rng.getrandbits(12) << 64
    value |= 0b10 << 62
    value |= rng.getrandbits(62)
    return str(uuid.UUID(int=value))


def uuid4(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def nanoid(rng: random.Random, size: int = 21) -> str:
    return "".join(rng.choice(NANOID_ALPHABET) for _ in range(size))
