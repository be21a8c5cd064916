"""Flow runs forked from the warm fork server (deployments/warm_start.py), on a REAL Prefect server.

One module, module-scoped processes: a Prefect server on SQLite and a runner serving
tests/deployments/warm_flows.py the way deployments/serve.py serves the product's flows. What must hold
for a forked run as for a spawned one: it is a process of its own (not the runner), its flow's postponed
annotations resolve, a suspended run resumes with its input, and cancelling a run stops its process.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelling

from deployments.warm_start import COMM_LENGTH
from metriport_devtools.processes import Service, comm_of, free_port, http_ok, poll_until
from metriport_flows.domain.stages import DocumentsReady, Outcome
from tests.deployments.warm_flows import DEPLOYMENT

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Served:
    api_url: str
    runner: Service
    out_dir: Path

    def client(self) -> SyncPrefectClient:
        return SyncPrefectClient(api=self.api_url)

    def start(self, **parameters: Any) -> str:
        with temporary_settings({PREFECT_API_URL: self.api_url}):
            run = run_deployment(
                DEPLOYMENT, parameters={"out_dir": str(self.out_dir), **parameters}, timeout=0, as_subflow=False
            )
        return str(run.id)

    def run(self, run_id: str) -> FlowRun:
        with self.client() as client:
            return client.read_flow_run(run_id)

    def state(self, run_id: str) -> str | None:
        state = self.run(run_id).state
        return state.name if state else None

    def completes(self, run_id: str) -> None:
        until(lambda: (state := self.run(run_id).state) is not None and state.is_final(), what=f"{run_id} ended")
        state = self.run(run_id).state
        assert state is not None and state.is_completed(), state

    def record(self, run_id: str, suffix: str = ".json") -> dict[str, Any]:
        path = self.out_dir / f"{run_id}{suffix}"
        until(path.exists, what=f"{path.name} written")
        return dict(json.loads(path.read_text()))


def until(probe: Callable[[], object], *, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("warm-start")
    home, out_dir = root / "prefect-home", root / "out"
    home.mkdir()
    out_dir.mkdir()
    api_url = f"http://127.0.0.1:{(port := free_port())}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "METRIPORT_", "DATABASE_URL"))}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONUNBUFFERED="1")
    server = Service(
        "prefect-server",
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        {**env, "PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_LOGGING_LEVEL": "WARNING"},
        root / "logs" / "prefect-server.log",
        ROOT,
    )
    runner = Service(
        "runner",
        [sys.executable, "-c", "from tests.deployments.warm_flows import main; main()"],
        {**env, "PREFECT_API_URL": api_url},
        root / "logs" / "runner.log",
        ROOT,
    )
    try:
        server.start()
        poll_until(lambda: http_ok(f"{api_url}/health"), timeout=90, what="starting Prefect", service=server)
        runner.start()
        served_url = f"{api_url}/deployments/name/{DEPLOYMENT}"
        poll_until(lambda: http_ok(served_url), timeout=90, what="serving the probe", service=runner)
        yield Served(api_url, runner, out_dir)
    finally:
        runner.stop(grace_seconds=10)
        server.stop(grace_seconds=10)


def test_runs_are_forks_of_one_warm_process_not_of_the_runner(served: Served) -> None:
    """Spawned, a run's parent is the runner; forked, it is the fork server, the same for every run."""
    runs = [served.start(), served.start()]
    for run_id in runs:
        served.completes(run_id)
    first, second = (served.record(run_id) for run_id in runs)
    assert first["pid"] != second["pid"]
    assert first["ppid"] == second["ppid"] != served.runner.pid


def test_a_suspended_run_resumes_with_its_input_in_a_new_fork(served: Served) -> None:
    run_id = served.start(mode="suspend")
    until(lambda: served.state(run_id) == "Suspended", what="run suspended")
    before = served.record(run_id, ".started")
    answer = DocumentsReady(outcome=Outcome.ready)
    with served.client() as client:
        client.resume_flow_run(run_id, run_input=answer.model_dump(mode="json"))
    served.completes(run_id)
    after = served.record(run_id)
    assert after["resumed_with"] == answer.model_dump(mode="json")
    assert after["pid"] != before["pid"] and after["ppid"] == before["ppid"] != served.runner.pid


def test_a_typed_parameter_validates_in_the_forked_run(served: Served) -> None:
    """The flow's annotations are strings (postponed): unpickled by value, the flow's function lacked the
    names only its annotations use, and every run failed validating its parameters."""
    run_id = served.start(outcome=Outcome.ready.value)
    served.completes(run_id)


def test_cancelling_a_forked_run_stops_its_process(served: Served) -> None:
    """And while it runs, its process is named after the run (`ps` shows which run it is)."""
    run_id = served.start(mode="block")
    pid = served.record(run_id, ".started")["pid"]
    assert comm_of(pid) == run_id[:COMM_LENGTH]
    with served.client() as client:
        client.set_flow_run_state(run_id, Cancelling(), force=True)
    until(lambda: served.state(run_id) == "Cancelled", what="run cancelled")
    until(lambda: not Path(f"/proc/{pid}").exists(), what=f"process {pid} gone", timeout=30)
