"""Every deployment, served from one process: the embedded mode (`python -m metriport_flows.deployments.serve`).

Why one process: on one machine a runner that polls the server is all the infrastructure needed; each
flow run still gets its own subprocess. A resumed (suspended) run restarts only when the runner polls,
so this polls every second (`PREFECT_RUNNER_POLL_FREQUENCY`, default here 1 instead of Prefect's 10; the
local stack sets it): a resume then reaches the flow within about a second instead of ~10 s. `PREFECT_RUNNER_PROCESS_LIMIT` bounds concurrent runs.

Requires PREFECT_API_URL, and what the flows read: METRIPORT_BASE_URL, METRIPORT_API_KEY, DATABASE_URL,
BUNDLE_DIR, HOT_WINDOW_SECONDS. `prefect.yaml` beside this file declares the same deployments for a
process work pool. To add a deployment, add one `Served(...)` line to SERVED. Metriport's rate limits
(Prefect global concurrency limits, `tasks/limits.py`) are created or updated at start.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from prefect import Flow, serve
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.settings import PREFECT_RUNNER_PROCESS_LIMIT
from prefect.types.entrypoint import EntrypointType

from metriport_flows.tasks.limits import ensure_rate_limits

# patient_records takes one pydantic model (the UI's form) under this parameter name.
PATIENT_RECORDS_PARAMETER = "request"

# patient.admit / patient.discharge webhooks become Prefect events (the receiver emits them, resource
# `metriport.message.<id>` with label `metriport.patient-id`); each one starts patient_records for that patient.
ADMIT_DISCHARGE_TRIGGER = DeploymentEventTrigger(
    name="patient-records on admit/discharge",
    description="A patient.admit or patient.discharge webhook refreshes that patient's records.",
    expect={"metriport.patient.admit", "metriport.patient.discharge"},
    match={"prefect.resource.id": "metriport.message.*"},
    parameters={PATIENT_RECORDS_PARAMETER: {"patient_id": "{{ event.resource['metriport.patient-id'] }}"}},
)


@dataclass(frozen=True)
class Served:
    """One deployment: `flow` is `module:function` under metriport_flows.flows."""

    flow: str
    name: str
    description: str
    cron: str | None = None
    interval: timedelta | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    triggers: tuple[DeploymentEventTrigger, ...] = ()

    def load_flow(self) -> Flow:
        module, function = self.flow.split(":")
        return getattr(importlib.import_module(f"metriport_flows.flows.{module}"), function)

    def deployment(self) -> RunnerDeployment:
        return self.load_flow().to_deployment(
            self.name,
            description=self.description,
            cron=self.cron,
            interval=self.interval,
            parameters=self.parameters or None,
            triggers=list(self.triggers) or None,
            tags=["metriport"],
            entrypoint_type=EntrypointType.MODULE_PATH,
        )


SERVED: tuple[Served, ...] = (
    Served("patient_records:patient_records", "on-demand", "One patient's records: documents, then the "
           "consolidated FHIR bundle.", triggers=(ADMIT_DISCHARGE_TRIGGER,)),
    Served("cohort:cohort_refresh", "nightly", "Refresh every patient's records: one patient-records run "
           "each, rate-limited, followed and reported.", cron="0 2 * * *"),
    Served("bulk_patient_create:bulk_patient_create", "on-demand", "Create patients from a CSV "
           "(validated first), then optionally refresh them."),
    Served("bulk_document_download:bulk_document_download", "on-demand", "Download a patient's documents "
           "(all, or one) into local storage with a manifest."),
    Served("reconcile:reconcile", "every-minute", "End every wait: re-dispatch stuck messages, retry failed "
           "webhooks, ask Metriport past the soft deadline, time out past the hard one.",
           interval=timedelta(minutes=1)),
)


def deployments() -> list[RunnerDeployment]:
    return [served.deployment() for served in SERVED]


def deployment_names() -> list[str]:
    """`flow-name/deployment-name` of everything served (the stack waits until the server knows them all)."""
    return [f"{served.load_flow().name}/{served.name}" for served in SERVED]


def main() -> None:
    # Metriport's rate limits hold for every run, not only a cohort's: create them before serving.
    asyncio.run(ensure_rate_limits())
    # A resumed run starts on the runner's next poll: 1 s unless PREFECT_RUNNER_POLL_FREQUENCY says otherwise.
    query_seconds = None if "PREFECT_RUNNER_POLL_FREQUENCY" in os.environ else 1.0
    serve(*deployments(), limit=PREFECT_RUNNER_PROCESS_LIMIT.value(), query_seconds=query_seconds)


if __name__ == "__main__":
    main()
