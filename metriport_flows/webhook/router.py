"""Message type → handler. Each handler module owns a `Router` for its message family; the dispatcher
gets one router composed from them explicitly (`Router.compose`, as python/bedevere composes its
routers), so nothing is registered by importing a module. A handler registered with a `stage` gets the
correlated, still open wait in its context and returns that stage's result (or None: nothing to resolve
yet); one without a stage (notifications) gets no wait and its return value is ignored."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from metriport_flows.domain.stages import Stage, StageResult
from metriport_flows.settings import Settings
from metriport_flows.store import InboxMessage, Store, Wait
from metriport_flows.webhook.protocols import Gateway, Metriport


@dataclass
class HandlerContext:
    store: Store
    settings: Settings
    api: Metriport
    gateway: Gateway
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

    @classmethod
    def compose(cls, *routers: Router) -> Router:
        """One router holding every registration of `routers`; a message type registered twice is an error."""
        composed = cls()
        for router in routers:
            for message_type, registration in router._registrations.items():
                if message_type in composed._registrations:
                    raise ValueError(f"{message_type} has two handlers")
                composed._registrations[message_type] = registration
        return composed

    @property
    def message_types(self) -> list[str]:
        return sorted(self._registrations)
