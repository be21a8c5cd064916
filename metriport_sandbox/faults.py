"""Fault scenario: what goes wrong, deterministically under the seed.

Every decision is drawn from a `random.Random` keyed by (seed, decision, stable key), so the same seed
and the same sequence of calls give the same faults regardless of how background tasks interleave.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields

RATE_KEYS = (
    "duplicate",
    "drop",
    "reorder",
    "api_5xx",
    "api_429",
    "stuck_dq",
    "dq_failed",
    "consolidated_failed",
    "url_expired",
)


@dataclass
class FaultScenario:
    duplicate: float = 0.0
    drop: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 1.0
    api_5xx: float = 0.0
    api_429: float = 0.0
    stuck_dq: float = 0.0
    dq_failed: float = 0.0
    consolidated_failed: float = 0.0
    url_expired: float = 0.0  # a consolidated bundle URL is issued already expired
    url_lifetime: int | None = None
    op_5xx: dict[str, float] = field(default_factory=dict)
    op_429: dict[str, float] = field(default_factory=dict)
    stuck_patients: set[str] = field(default_factory=set)
    seed: int = 0

    @classmethod
    def parse(cls, spec: str | None, seed: int = 0) -> "FaultScenario":
        """`"duplicate=0.3,drop=0.1,reorder=0.5,api_5xx=0.1,api_429.documentQuery=0.5,url_lifetime=0"`."""
        scenario = cls(seed=seed)
        for item in (spec or "").split(","):
            if not item.strip():
                continue
            name, sep, raw = item.partition("=")
            name, raw = name.strip(), raw.strip()
            if not sep:
                raise ValueError(f"fault {name!r} needs a value (name=value)")
            scenario.set(name, raw)
        return scenario

    def set(self, name: str, raw: str | float | int | list) -> None:
        if name in RATE_KEYS or name == "reorder_delay":
            value = float(raw)
            if name != "reorder_delay" and not 0.0 <= value <= 1.0:
                raise ValueError(f"fault {name} must be a rate between 0 and 1")
            setattr(self, name, value)
        elif name == "url_lifetime":
            self.url_lifetime = None if raw in ("", None, "none") else int(raw)
        elif name.startswith(("api_5xx.", "api_429.")):
            kind, _, operation = name.partition(".")
            target = self.op_5xx if kind == "api_5xx" else self.op_429
            target[operation] = float(raw)
        elif name == "stuck_patients":
            items = raw if isinstance(raw, list) else str(raw).split("|")
            self.stuck_patients = {str(p) for p in items if p}
        else:
            raise ValueError(f"unknown fault {name!r}")

    def as_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["stuck_patients"] = sorted(self.stuck_patients)
        return data

    def chance(self, rate: float, *key: object) -> bool:
        if rate <= 0:
            return False
        if rate >= 1:
            return True
        return random.Random(":".join(str(k) for k in (self.seed, *key))).random() < rate

    def fraction(self, *key: object) -> float:
        return random.Random(":".join(str(k) for k in (self.seed, "fraction", *key))).random()

    def api_fault(self, operation: str, *key: object) -> int | None:
        """429 or 500 for this API call, or None."""
        if self.chance(self.op_429.get(operation, self.api_429), "api_429", operation, *key):
            return 429
        if self.chance(self.op_5xx.get(operation, self.api_5xx), "api_5xx", operation, *key):
            return 500
        return None

    def dq_stuck(self, patient_id: str, *key: object) -> bool:
        return patient_id in self.stuck_patients or self.chance(self.stuck_dq, "stuck_dq", *key)
