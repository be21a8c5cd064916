"""What the dispatcher, its handlers and the reconciler need from Prefect and from Metriport.

The real implementations are `PrefectGateway` and `client.api.MedicalApi`; tests pass recording fakes
or the emulator-backed client. Typing against these keeps the webhook side free of both.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from metriport_flows.client import models as m
from metriport_flows.domain.stages import StageResult
from metriport_flows.webhook.events import PlannedEvent

TERMINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
# A run in one of these will never read its waits again. A crashed run is left out: its process died
# under it, and it may be brought back under the same id to resume where it was.
ENDED_STATES = {"COMPLETED", "FAILED", "CANCELLED"}


@dataclass(frozen=True)
class RunView:
    """What delivery needs to know about a flow run."""

    state_type: str | None
    state_name: str | None
    pause_key: str | None

    @property
    def is_paused(self) -> bool:
        return self.state_type == "PAUSED"

    @property
    def is_terminal(self) -> bool:
        return self.state_type in TERMINAL_STATES

    @property
    def has_ended(self) -> bool:
        """Final for good: nothing in this run waits for anything any more."""
        return self.state_type in ENDED_STATES


@dataclass(frozen=True)
class ResumeAnswer:
    status: str  # ACCEPT, REJECT or ABORT (Prefect's SetStateStatus)
    reason: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status == "ACCEPT"


@dataclass(frozen=True)
class RunSummary:
    """A flow run found by its state: its id and since when it has been in that state."""

    id: str
    state_type: str
    state_since: datetime | None
    state_message: str | None = None


class Gateway(Protocol):
    """The Prefect calls: read a run, resume it with a stage's result, emit an event; and for crashed
    runs, find them, see which still send heartbeats, and set their state."""

    @property
    def heartbeat_seconds(self) -> float | None:
        """How often a run's process sends Prefect a heartbeat (None: it sends none)."""
        ...

    async def read_flow_run(self, flow_run_id: str) -> RunView | None: ...
    async def resume(self, flow_run_id: str, run_input: StageResult) -> ResumeAnswer: ...
    def emit(self, planned: PlannedEvent) -> None: ...
    async def runs_in_state(
        self, state_type: str, flow_names: Collection[str], expected_after: datetime
    ) -> list[RunSummary]: ...
    async def heartbeating(self, flow_run_ids: Collection[str], since: datetime) -> set[str]: ...
    async def set_state(self, flow_run_id: str, state_type: str, message: str) -> None: ...


class Metriport(Protocol):
    """The Metriport reads the webhook side makes: progress, stored webhooks, downloads, retries."""

    async def get_document_query(self, patient_id: str) -> m.DocumentQueryProgress: ...
    async def get_consolidated_query(self, patient_id: str, request_id: str) -> m.ConsolidatedQuery: ...
    async def get_consolidated_webhook(self, patient_id: str, request_id: str) -> m.ConsolidatedWebhookStatus: ...
    async def get_webhook_status(self) -> m.WebhookStatus: ...
    async def retry_webhooks(self) -> None: ...
    async def download(self, url: str, dest: Path, chunk_size: int = ...) -> m.Downloaded: ...
