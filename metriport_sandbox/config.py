"""SandboxConfig: how one emulator instance behaves (mode, seed, timing, faults, limits, URL lifetimes)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

DEFAULT_RATE_LIMITS = {"patientCreateOrUpdate": 15, "documentQuery": 20, "consolidatedDataQuery": 120}


class SandboxConfig(BaseModel):
    mode: Literal["sandbox", "production"] = "sandbox"
    seed: int = 0
    delay: tuple[float, float] = Field((0.0, 5.0), description="random delay (seconds) before async jobs finish")
    faults: str = Field("", description="fault SPEC, e.g. 'duplicate=0.3,drop=0.1'")
    rate_limits: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_RATE_LIMITS))
    rate_limit_window: float = Field(60.0, description="fixed window length in seconds")
    url_lifetimes: dict[str, int] = Field(default_factory=dict, description="URL kind -> seconds, overrides")
    public_url: str = Field("http://127.0.0.1:8081", description="base URL used in the signed URLs handed out")
    webhook_timeout: float = 5.0
    ping_timeout: float = 2.0
    patient_limit: int = 20
    url_secret: str = "metriport-sandbox-url-secret"
    retry_pause_max: float = Field(0.2, description="pause between re-sent messages (0-200 ms, as Metriport)")
    stall_documents: dict[str, int] = Field(
        default_factory=dict, description="document id -> how many of its next downloads stall half-way"
    )
    stall_seconds: float = Field(30.0, description="how long a stalled download stops sending")

    @field_validator("delay")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        return check_delay(value)


def check_delay(value: tuple[float, float]) -> tuple[float, float]:
    low, high = value
    if low < 0 or high < low:
        raise ValueError("delay must be MIN,MAX with 0 <= MIN <= MAX")
    return (float(low), float(high))


def parse_delay(text: str) -> tuple[float, float]:
    """`"0,5"` or `"2"` -> (min, max) seconds."""
    parts = [float(p) for p in text.split(",") if p.strip()]
    if len(parts) == 1:
        return check_delay((parts[0], parts[0]))
    if len(parts) != 2:
        raise ValueError("delay must be MIN,MAX")
    return check_delay((parts[0], parts[1]))
