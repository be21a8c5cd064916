"""`prefect deploy --all` from a fresh clone, then a patient through a process work-pool worker.

The project's files (tracked and untracked-but-not-ignored, as they are in the working tree) become a
local git repository, the "fresh clone": `prefect deploy --all` runs there with no flags, and the pull
step's variables point at it. The worker starts in another folder, so the flow run can only find
`flows/` and `tasks/` through the `git_clone` pull step. The emulator replies after the hot window, so
both stages suspend and each resume goes through the worker again (a new clone, a new process).
The stack is this module's own (nothing served), so no other runner can pick the runs up.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prefect.client.schemas.objects import FlowRun, StateType

from metriport_devtools import project
from metriport_devtools.processes import Service, group_members, venv_bin
from metriport_devtools.stack import LocalStack, poll_until
from metriport_flows.domain.stages import ConsolidatedReady, Outcome
from metriport_flows.store import Store
from tests.fixtures.patients import emulator_settings
from tests.fixtures.sandbox import FACILITY
from tests.fixtures.stack import prefect_client, run_patient_records, wait_for_final_state, wait_for_state_name

pytestmark = pytest.mark.e2e

BRANCH = "deployed"
HOT_WINDOW_SECONDS = 2.0
REPLY_SECONDS = HOT_WINDOW_SECONDS + 1.5  # every stage suspends: resumes go through the worker too
HANDOVER_REPLY_SECONDS = 8.0  # time to stop one worker and start the other while the run is suspended
COMMAND_TIMEOUT = 120.0
PATIENT = {
    "firstName": "Kyla",  # a seed first name: the emulator has documents for her
    "lastName": "Workpool",
    "dob": "1971-02-03",
    "genderAtBirth": "F",
    "address": [{"addressLine1": "9 Test Rd", "city": "Springfield", "state": "IL", "zip": "62701", "country": "USA"}],
}


def fresh_clone(target: Path) -> Path:
    """The project's files as they are now, committed on `BRANCH` of a new repository at `target`."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=project.ROOT,
        capture_output=True,
        check=True,
        timeout=COMMAND_TIMEOUT,
    ).stdout.decode()
    for relative in filter(None, listed.split("\0")):
        source = project.ROOT / relative
        if source.is_file():  # a tracked file deleted in the working tree is not part of the clone
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / relative)
    git = ["git", "-c", "user.name=e2e", "-c", "user.email=e2e@example.com"]
    for argv in (
        ["init", "--quiet", "--initial-branch", BRANCH],
        ["add", "--all"],
        ["commit", "--quiet", "-m", "deployed"],
    ):
        subprocess.run(git + argv, cwd=target, check=True, timeout=COMMAND_TIMEOUT)
    return target


def run_cli(stack: LocalStack, argv: list[str], cwd: Path) -> None:
    """A Prefect CLI command against the stack; its output is in the failure message."""
    done = subprocess.run(
        argv,
        cwd=cwd,
        env=stack.child_env(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, (
        f"{argv[1:3]} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )


@pytest.fixture(scope="module")
def pool_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Prefect server, emulator and receiver; flow runs only through the worker this module starts."""
    stack = LocalStack(
        tmp_path_factory.mktemp("pool-stack"),
        hot_window_seconds=HOT_WINDOW_SECONDS,
        delay=(REPLY_SECONDS, REPLY_SECONDS),
        serve=False,
        grace_seconds=3.0,
    )
    with stack:
        yield stack
    assert not stack.any_alive(), f"processes of the stack survived stop(): {stack.pids()}"


@pytest.fixture(scope="module")
def pool(pool_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> str:
    """`prefect deploy --all` run in a fresh clone, with the pool and the pull step's variables set."""
    here = tmp_path_factory.mktemp("deploy")
    clone = fresh_clone((here / "clone").resolve())
    pool = project.work_pool_name()
    prefect = venv_bin("prefect")
    run_cli(pool_stack, [prefect, "work-pool", "create", pool, "--type", "process"], here)
    run_cli(pool_stack, [prefect, "variable", "set", "metriport_flows_repository", clone.as_uri()], here)
    run_cli(pool_stack, [prefect, "variable", "set", "metriport_flows_branch", BRANCH], here)
    run_cli(pool_stack, [prefect, "deploy", "--all"], clone)
    return pool


def start_worker(stack: LocalStack, pool: str, name: str, folder: Path) -> Service:
    """A worker started in a folder of its own, with result storage of its own (as on another machine)."""
    folder.mkdir()
    worker = stack.start_service(
        name,
        [venv_bin("prefect"), "worker", "start", "--pool", pool, "--name", name],
        cwd=folder,
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_LOCAL_STORAGE_PATH=str(folder / "results"),
    )
    poll_until(
        lambda: any(w["name"] == name and w["status"] == "ONLINE" for w in workers(stack, pool)),
        timeout=COMMAND_TIMEOUT,
        what=f"waiting for {name}",
        service=worker,
    )
    return worker


def new_patient(stack: LocalStack, last_name: str) -> str:
    headers = {"x-api-key": stack.api_key}
    with httpx.Client(base_url=stack.emulator_url, headers=headers, timeout=30.0) as api:
        facility_id = api.post("/medical/v1/facility", json=FACILITY).raise_for_status().json()["id"]
        patient = api.post(
            "/medical/v1/patient", params={"facilityId": facility_id}, json=PATIENT | {"lastName": last_name}
        )
        return str(patient.raise_for_status().json()["id"])


def assert_completed_with_the_served_bundle(stack: LocalStack, run_id: str) -> FlowRun:
    run = wait_for_final_state(stack, run_id, timeout=180)  # within pytest-timeout's 300 s
    assert run.state is not None, run
    assert run.state.type == StateType.COMPLETED, (run.state.name, run.state.message)
    waits = Store(stack.database_url).waits_for_run(run_id)
    assert [w.stage for w in waits] == ["documents", "consolidated"]
    bundle = waits[-1].result_model()
    assert isinstance(bundle, ConsolidatedReady) and bundle.outcome == Outcome.ready and bundle.bundle_path
    assert hashlib.sha256(Path(bundle.bundle_path).read_bytes()).hexdigest() == bundle.sha256
    served = httpx.get(f"{stack.emulator_url}/_sandbox/downloads", timeout=30.0).json()
    assert {d["sha256"] for d in served if d["request_id"] == waits[-1].request_id and d["status"] == 200} == {
        bundle.sha256
    }
    with prefect_client(stack) as client:
        states = [state.name for state in client.read_flow_run_states(run.id)]
    assert states.count("Suspended") == 2, f"both stages suspend and resume through a worker: {states}"
    return run


def document_queries(stack: LocalStack, patient_id: str) -> int:
    posts = httpx.get(f"{stack.emulator_url}/_sandbox/document-query-posts", timeout=30.0).raise_for_status()
    return int(posts.json().get(patient_id, 0))


def test_deploy_all_from_a_fresh_clone_then_a_worker_elsewhere_runs_a_patient(
    pool_stack: LocalStack, pool: str, tmp_path: Path
) -> None:
    worker = start_worker(pool_stack, pool, "worker-elsewhere", tmp_path / "worker")
    patient_id = new_patient(pool_stack, "Workpool")
    run = assert_completed_with_the_served_bundle(
        pool_stack, run_patient_records(pool_stack, {"patient_id": patient_id})
    )
    assert run.work_pool_name == pool
    assert document_queries(pool_stack, patient_id) == 1
    worker.stop(pool_stack.grace_seconds)


def test_a_run_suspended_on_one_worker_finishes_on_another_without_a_second_start_call(
    pool_stack: LocalStack, pool: str, tmp_path: Path
) -> None:
    """The first worker is gone (its folder and result storage with it) once the run suspends; the
    second worker runs the resumed run, which must not ask Metriport again: the stored wait holds the
    request id whatever the second worker's result storage holds."""
    first = start_worker(pool_stack, pool, "worker-a", tmp_path / "a")
    pgid = first.pid
    assert pgid is not None
    idle = set(group_members(pgid))  # the worker and its helpers, no flow run
    patient_id = new_patient(pool_stack, "Handover")
    with httpx.Client(base_url=f"{pool_stack.emulator_url}/_sandbox", timeout=30.0) as control:
        with emulator_settings(control, delay=[HANDOVER_REPLY_SECONDS, HANDOVER_REPLY_SECONDS]):
            run_id = run_patient_records(pool_stack, {"patient_id": patient_id})
            wait_for_state_name(pool_stack, run_id, "Suspended", timeout=120)
            # The suspended run's process exits on its own; stopping the worker under it would crash it.
            poll_until(lambda: set(group_members(pgid)) <= idle, timeout=60, what="the run's process to exit")
            first.stop(pool_stack.grace_seconds)
            shutil.rmtree(tmp_path / "a")
            second = start_worker(pool_stack, pool, "worker-b", tmp_path / "b")
            assert_completed_with_the_served_bundle(pool_stack, run_id)
    assert not first.group_alive()
    assert document_queries(pool_stack, patient_id) == 1, "the resumed run asked Metriport again"
    second.stop(pool_stack.grace_seconds)


def workers(stack: LocalStack, pool: str) -> list[dict[str, object]]:
    response = httpx.post(f"{stack.prefect_api_url}/work_pools/{pool}/workers/filter", json={}, timeout=10.0)
    return list(response.raise_for_status().json())
