"""The scale-out stack on the machine's PostgreSQL: the Prefect server and the inbox on databases of their
own, two receiver processes on one webhook socket, the deployments on a process work pool with two
workers. A cohort whose runs cannot all fit in one worker runs on both; every stage suspends, so each
resume goes through a worker again; the databases are gone after stop."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from prefect.client.schemas.objects import StateType

from metriport_devtools.postgres import ROLES, admin_url, answers
from metriport_devtools.processes import group_members
from metriport_devtools.stack import LocalStack
from metriport_flows.store import MessageStatus, Store
from tests.fixtures.patients import artifacts_of, create_facility, new_patient, runs_of
from tests.fixtures.stack import prefect_client, run_deployment_on, wait_for_final_state

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not answers(admin_url()), reason=f"PostgreSQL does not answer at {admin_url()}"),
]

COHORT = 5
WORKER_LIMIT = 3  # the cohort's run and its five patients' runs cannot all fit in one worker


def databases_named(prefix: str) -> list[str]:
    with psycopg.connect(admin_url()) as connection:
        rows = connection.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",))
        return [name for (name,) in rows]


@pytest.fixture(scope="module")
def scale_out_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = LocalStack(
        tmp_path_factory.mktemp("scale-out"),
        scale_out=True,
        hot_window_seconds=1.0,
        delay=(2.0, 2.0),  # every stage suspends
        runner_process_limit=WORKER_LIMIT,
        grace_seconds=3.0,
    )
    assert stack.databases is not None
    prefix = f"mf_{stack.databases.token}_"
    with stack:
        assert sorted(databases_named(prefix)) == sorted(prefix + role for role in ROLES)
        yield stack
    assert not stack.any_alive(), f"processes of the stack survived stop(): {stack.pids()}"
    assert databases_named(prefix) == [], "the stack's databases outlived it"


def submitted_by(stack: LocalStack, worker: str) -> set[str]:
    """Flow runs the worker's log says it submitted."""
    log = (stack.logs_dir / f"{worker}.log").read_text()
    return set(re.findall(r"submitting flow run '([0-9a-f-]{36})'", log))


def test_a_cohort_runs_on_two_workers_with_postgresql_under_prefect_and_the_inbox(
    scale_out_stack: LocalStack,
) -> None:
    stack = scale_out_stack
    receiver = stack.services["receiver"]
    assert receiver.pid is not None and len(group_members(receiver.pid)) >= 3, "uvicorn's supervisor and 2 workers"
    api = httpx.Client(base_url=stack.emulator_url, headers={"x-api-key": stack.api_key}, timeout=30.0)
    control = httpx.Client(base_url=f"{stack.emulator_url}/_sandbox", timeout=30.0)
    with prefect_client(stack) as prefect, api, control:
        facility_id = create_facility(api, control)
        patients = [new_patient(api, facility_id, "Jane") for _ in range(COHORT)]
        params = {"patient_ids": patients, "create_interval_seconds": 0.1, "poll_seconds": 2, "follow_minutes": 4}
        run_id = run_deployment_on(stack, "cohort-refresh/nightly", {"params": params})
        cohort = wait_for_final_state(stack, run_id, timeout=280)
        assert cohort.state is not None and cohort.state.type == StateType.COMPLETED, cohort.state
        report = artifacts_of(prefect, run_id)["cohort-refresh"]
        assert f"completed **{COHORT}** · failed **0** · still waiting **0**" in report
        runs = runs_of(
            prefect, "patient-records/on-demand", idempotency_key={"any_": [f"cohort:{run_id}:{p}" for p in patients]}
        )
        assert len(runs) == COHORT and all(r.state and r.state.type == StateType.COMPLETED for r in runs)
        suspended = [sum(s.name == "Suspended" for s in prefect.read_flow_run_states(r.id)) for r in runs]
        assert suspended == [2] * COHORT, "each stage suspended and was resumed through a worker"
        posts = control.get("/document-query-posts").raise_for_status().json()

    by_worker = {name: submitted_by(stack, name) for name in ("worker-1", "worker-2")}
    assert all(by_worker.values()), f"both workers ran flow runs: {by_worker}"
    assert {str(r.id) for r in runs} | {run_id} <= set().union(*by_worker.values())
    assert [posts.get(p) for p in patients] == [1] * COHORT, "one document query per patient"
    store = Store(stack.database_url)
    try:
        assert store.is_postgres
        rows = store.list_messages(limit=1000)
        assert rows and {row.status for row in rows} <= {MessageStatus.done}, {row.status for row in rows}
    finally:
        store.dispose()
    assert not Path(stack.prefect_db_path).exists(), "the Prefect server ran on PostgreSQL, not SQLite"
