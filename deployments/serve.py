"""Every deployment of `prefect.yaml`, served from one process: the embedded mode.

Run from the project root: `python -m deployments.serve`. The deployments are built from the root
`prefect.yaml` (names, descriptions, schedules, triggers, tags), so they are declared once; only the
work pool and the pull step do not apply here: this process runs every flow run itself, each in its own
subprocess, with the project root as its working directory.

Why one process: on one machine a runner that polls the server is all the infrastructure needed. A
resumed (suspended) run restarts only when the runner polls, so this polls every second
(`PREFECT_RUNNER_POLL_FREQUENCY`, default here 1 instead of Prefect's 10): a resume then reaches the
flow within about a second instead of ~10 s (docs/prefect.md), and each run's process is forked from a
warm process that has imported the flows already (`warm_start.py`), not started from a bare interpreter.
`PREFECT_RUNNER_PROCESS_LIMIT` bounds concurrent runs. Metriport's rate limits (a schedule in the store,
`tasks/limits.py`) are created or updated at start from METRIPORT_RATE_*.

Requires PREFECT_API_URL, and what the flows read: METRIPORT_BASE_URL, METRIPORT_API_KEY, DATABASE_URL,
BUNDLE_DIR, HOT_WINDOW_SECONDS.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from importlib import import_module
from pathlib import Path
from typing import Any

import yaml
from prefect import Flow
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.schedules import (
    SCHEDULE_TYPES,
    CronSchedule,
    IntervalSchedule,
)
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.exceptions import TerminationSignal
from prefect.runner import Runner
from prefect.settings import PREFECT_RUNNER_PROCESS_LIMIT

from deployments.warm_start import use_warm_starts
from metriport_flows.client.log_hygiene import quiet_http_logs
from metriport_flows.settings import get_settings
from tasks.limits import ensure_rate_limits

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PREFECT_YAML = PROJECT_ROOT / "prefect.yaml"


@dataclass(frozen=True)
class Declared:
    """One deployment as `prefect.yaml` declares it."""

    entrypoint: str
    name: str
    description: str = ""
    tags: tuple[str, ...] = ()
    schedules: tuple[SCHEDULE_TYPES, ...] = ()
    triggers: tuple[DeploymentEventTrigger, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_yaml(cls, entry: dict[str, Any]) -> Declared:
        return cls(
            entrypoint=entry["entrypoint"],
            name=entry["name"],
            description=entry.get("description", ""),
            tags=tuple(entry.get("tags") or ()),
            schedules=tuple(_schedule(s) for s in entry.get("schedules") or ()),
            triggers=tuple(DeploymentEventTrigger.model_validate(t) for t in entry.get("triggers") or ()),
            parameters=dict(entry.get("parameters") or {}),
        )

    @cached_property
    def flow(self) -> Flow[..., Any]:
        """Imported by its module's name (a run's process gets it by that name, `warm_start.py`); loaded from
        its file, its module would have no name to import."""
        flow = getattr(import_module(self.module), self.entrypoint.split(":")[1])
        if not isinstance(flow, Flow):
            raise TypeError(f"{self.entrypoint} is a {type(flow).__name__}, not a flow")
        return flow

    @property
    def module(self) -> str:
        """The flow's module as an import name (`flows/patient_records.py:...` -> `flows.patient_records`)."""
        return self.entrypoint.split(":")[0].removesuffix(".py").replace("/", ".")

    @property
    def full_name(self) -> str:
        """`flow-name/deployment-name`, as `prefect deployment run` takes it."""
        return f"{self.flow.name}/{self.name}"

    def options(self) -> dict[str, Any]:
        """What the deployment declares besides its flow and name, as `to_deployment` and `add_flow` take
        it; schedules inactive when PAUSED_SCHEDULES names the deployment (a test stack must not start a
        nightly refresh of every patient at 02:00)."""
        active = self.full_name not in get_settings().paused_schedules
        return {
            "description": self.description,
            "schedules": [DeploymentScheduleCreate(schedule=s, active=active) for s in self.schedules] or None,
            "parameters": self.parameters or None,
            "triggers": list(self.triggers) or None,
            "tags": list(self.tags),
        }

    def deployment(self) -> RunnerDeployment:
        """The deployment, for a work pool."""
        deployment = self.flow.to_deployment(self.name, **self.options())
        if not isinstance(deployment, RunnerDeployment):
            raise TypeError(f"{self.name}: Prefect returned {type(deployment).__name__}, not a RunnerDeployment")
        return deployment


def _schedule(entry: dict[str, Any]) -> SCHEDULE_TYPES:
    if "cron" in entry:
        return CronSchedule(cron=entry["cron"], timezone=entry.get("timezone"))
    if "interval" in entry:
        return IntervalSchedule(interval=timedelta(seconds=float(entry["interval"])))
    raise ValueError(f"prefect.yaml: a schedule needs cron or interval, got {sorted(entry)}")


def declared(path: Path = PREFECT_YAML) -> list[Declared]:
    """The deployments of `prefect.yaml`, in file order."""
    return [Declared.from_yaml(entry) for entry in yaml.safe_load(path.read_text())["deployments"]]


def deployment_names() -> list[str]:
    """`flow-name/deployment-name` of everything served (the local stack waits until the server knows them)."""
    return [d.full_name for d in declared()]


def main() -> None:
    # The runner starts flow runs with its working directory; entrypoints are relative to the root.
    os.chdir(PROJECT_ROOT)
    quiet_http_logs()
    ensure_rate_limits()
    # A resumed run starts on the runner's next poll: 1 s unless PREFECT_RUNNER_POLL_FREQUENCY says otherwise.
    query_seconds = None if "PREFECT_RUNNER_POLL_FREQUENCY" in os.environ else 1.0
    runner = Runner(limit=PREFECT_RUNNER_PROCESS_LIMIT.value(), query_seconds=query_seconds)
    served = declared()
    for entry in served:
        # Added as flows, not as deployments: the runner then runs the loaded flow (which `use_warm_starts`
        # forks) instead of `python -m prefect.engine` loading it again from the entrypoint.
        runner.add_flow(entry.flow, entry.name, **entry.options())
    use_warm_starts([entry.module for entry in served])
    print(f"serving {', '.join(entry.full_name for entry in served)}", flush=True)
    try:
        asyncio.run(runner.start())
    except (KeyboardInterrupt, TerminationSignal):
        print("stopped", flush=True)


if __name__ == "__main__":
    main()
