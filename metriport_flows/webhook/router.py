"""Message type → handler registry. A handler registered with a `stage` gets the correlated, still
open wait in its context and returns that stage's result (or None: nothing to resolve yet); one
without a stage (notifications) gets no wait and its return value is ignored."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from metriport_flows.domain.stages import Stage, StageResult
from metriport_flows.settings import Settings
from metriport_flows.store import InboxMessage, Store, Wait

if TYPE_CHECKING:
    from metriport_flows.client.api import MedicalApi
    from metriport_flows.webhook.prefect_gateway import PrefectGateway


@dataclass
class HandlerContext:
    store: Store
    settings: Settings
    api: "MedicalApi"
    gateway: "PrefectGateway"
    row: InboxMessage
    wait: Wait | None = None

    def note_progress(self, values: Mapping[str, Any]) -> None:
        """Keep what this message said on the wait, for the message that resolves it later."""
        if self.wait is not None:
            self.store.note_wait_progress(self.wait.id, values)
            self.wait.progress = {**(self.wait.progress or {}), **values}


Handler = Callable[[Any, HandlerContext], Awaitable[StageResult | None]]


@dataclass(frozen=True)
class Registration:
    message_type: str
    handler: Handler
    stage: Stage | None


class Router:
    def __init__(self) -> None:
        self._registrations: dict[str, Registration] = {}

    def register(self, message_type: str, *, stage: Stage | None = None) -> Callable[[Handler], Handler]:
        def decorator(handler: Handler) -> Handler:
            self._registrations[message_type] = Registration(message_type, handler, stage)
            return handler

        return decorator

    def get(self, message_type: str) -> Registration | None:
        return self._registrations.get(message_type)

    def stage_for(self, message_type: str) -> Stage | None:
        registration = self.get(message_type)
        return registration.stage if registration else None

    @property
    def message_types(self) -> list[str]:
        return sorted(self._registrations)


router = Router()
