"""An infrastructure crash never costs a patient: a run whose process dies while it waits is brought back
by the reconciler under the same id, and carries on where it was (no second document query).

The session stack: the real Prefect server, the runner serving the deployments, the emulator and the
receiver with its dispatcher. The run's own process is SIGKILLed, as the OOM killer or a lost machine
would; the runner reports the run Crashed; one reconcile pass (in this process) schedules it again. The
scheduled pass is paused so that this one is the pass that revives it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import httpx
import pytest
from prefect.client.schemas.objects import StateType

from deployments.warm_start import COMM_LENGTH
from metriport_devtools.processes import comm_of, group_members
from metriport_devtools.stack import LocalStack
from metriport_flows.domain.stages import Stage
from metriport_flows.store import Store
from tests.e2e.test_reconcile_e2e import new_patient, reconcile_here, wait_of
from tests.fixtures.sandbox import FACILITY
from tests.fixtures.stack import run_patient_records, until, wait_for_final_state, wait_for_flow_run

pytestmark = pytest.mark.e2e


@pytest.fixture
def slow_replies(sandbox_control: httpx.Client) -> Iterator[None]:
    """Metriport answers after 6 s (the run is still watching its wait when it is killed)."""
    sandbox_control.post("/config", json={"delay": "6,6"}).raise_for_status()
    yield
    sandbox_control.post("/config", json={"delay": "0,0"}).raise_for_status()


def run_process(stack: LocalStack, run_id: str) -> int:
    """The pid of the flow run's own process (forked for `serve`, in its group, named after the run)."""
    serve = stack.services["serve"].pid
    assert serve is not None
    pids = [pid for pid in group_members(serve) if pid != serve and comm_of(pid) == run_id[:COMM_LENGTH]]
    assert pids, f"no process of run {run_id} in the serve group"
    return pids[0]


def test_a_run_killed_while_waiting_is_brought_back_and_completes_without_a_second_query(
    local_stack, stack_api, sandbox_control, stack_store: Store, slow_replies, reconcile_paused
) -> None:
    facility_id = stack_api.post("/medical/v1/facility", json=FACILITY).raise_for_status().json()["id"]
    patient_id = new_patient(stack_api, facility_id, "Jane")
    run_id = run_patient_records(local_stack, {"patient_id": patient_id, "hot_window_seconds": 60})
    wait = until(
        lambda: (w := wait_of(stack_store, run_id, Stage.documents)) is not None and w.request_id and w,
        timeout=60,
        what="the documents wait with its request id (the query started, the run watching its wait)",
    )

    os.kill(run_process(local_stack, run_id), signal.SIGKILL)
    crashed = wait_for_flow_run(
        local_stack,
        run_id,
        lambda r: r.state is not None and r.state.type == StateType.CRASHED,
        timeout=60,
        what="crashed",
    )
    assert stack_store.get_wait(wait.id).status in ("open", "resolved"), "its wait is still to be read"

    report = reconcile_here(local_stack, stack_store)

    assert report.revived == 1, report
    run = wait_for_final_state(local_stack, run_id, timeout=120)
    assert run.state.type == StateType.COMPLETED, (run.state.name, run.state.message)
    assert crashed.state.timestamp < run.state.timestamp
    posts = sandbox_control.get("/document-query-posts").json()
    assert posts[patient_id] == 1, "the revived run reused its started query"
    assert stack_store.get_revival(run_id).attempts == 1
    assert {w.stage for w in stack_store.waits_for_run(run_id)} >= {Stage.documents.value, Stage.consolidated.value}
