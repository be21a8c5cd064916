"""Prefect events for webhook messages and wait resolutions: ids only, never PHI.

Event ids are derived from the message id (uuid5), so a message dispatched twice (a replay, a retried
claim) is one event. Each event names the flow run it concerns as a related resource, so the resumes
show in that run's event feed and users can hang their own automations on them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from metriport_flows.store import InboxMessage, Wait

MESSAGE_RESOURCE_PREFIX = "metriport.message."
WAIT_RESOURCE_PREFIX = "metriport.wait."
WAIT_RESOLVED = "metriport.wait.resolved"
WAIT_DELIVERED = "metriport.wait.delivered"


@dataclass(frozen=True)
class PlannedEvent:
    event: str
    resource: dict[str, str]
    id: uuid.UUID
    related: list[dict[str, str]] = field(default_factory=list)
    payload: dict[str, Any] = field(default_factory=dict)


def message_event_id(message_id: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, "metriport:" + message_id)


def _flow_run(flow_run_id: str) -> dict[str, str]:
    return {"prefect.resource.id": f"prefect.flow-run.{flow_run_id}", "prefect.resource.role": "flow-run"}


def message_event(
    row: InboxMessage, wait: Wait | None = None, *, status: str | None = None, outcome: str | None = None
) -> PlannedEvent:
    """`metriport.<type>` for one inbox message; related to the wait's flow run when correlated."""
    flow_run_id = wait.flow_run_id if wait is not None else row.flow_run_id
    payload: dict[str, Any] = {"message_id": row.message_id, "status": status, "outcome": outcome}
    if wait is not None:
        payload.update(wait_id=wait.id, stage=wait.stage, attempt=wait.attempt)
    return PlannedEvent(
        event=f"metriport.{row.type or 'unknown'}",
        resource={
            "prefect.resource.id": MESSAGE_RESOURCE_PREFIX + row.message_id,
            "metriport.patient-id": row.patient_id or "",
            "metriport.request-id": row.request_id or "",
            "metriport.message-type": row.type or "",
        },
        id=message_event_id(row.message_id),
        related=[_flow_run(flow_run_id)] if flow_run_id else [],
        payload={k: v for k, v in payload.items() if v is not None},
    )


def wait_event(name: str, wait: Wait, **payload: Any) -> PlannedEvent:
    """`metriport.wait.resolved` / `metriport.wait.delivered`, one per wait and name."""
    return PlannedEvent(
        event=name,
        resource={
            "prefect.resource.id": WAIT_RESOURCE_PREFIX + wait.id,
            "metriport.patient-id": wait.patient_id or "",
            "metriport.request-id": wait.request_id or "",
            "metriport.stage": wait.stage,
            "metriport.pause-key": wait.pause_key,
        },
        id=uuid.uuid5(uuid.NAMESPACE_URL, f"metriport:{name}:{wait.id}"),
        related=[_flow_run(wait.flow_run_id)],
        payload={
            "wait_id": wait.id,
            "stage": wait.stage,
            "attempt": wait.attempt,
            "outcome": wait.outcome,
            **{k: v for k, v in payload.items() if v is not None},
        },
    )
