"""The local stack: everything starts and answers, stopping leaves no process, the deployments agree."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import httpx
import pytest
import yaml

from deployments import serve
from metriport_devtools.processes import Service, StackError, group_alive, poll_until
from metriport_devtools.saved_stack import saved_stack_running, stop_saved
from metriport_devtools.stack import LocalStack
from metriport_flows.domain.patient_records import PATIENT_RECORDS_DEPLOYMENT, PATIENT_RECORDS_PARAMETER


@pytest.mark.e2e
def test_every_component_answers(local_stack: LocalStack, sandbox_control: httpx.Client) -> None:
    assert httpx.get(f"{local_stack.prefect_api_url}/health").json() is True
    assert httpx.get(f"{local_stack.receiver_url}/healthz").status_code == 200
    for name in serve.deployment_names():
        assert httpx.get(f"{local_stack.prefect_api_url}/deployments/name/{name}").status_code == 200, name
    assert local_stack.prefect_db_path.is_file()
    assert local_stack.inbox_db_path.is_file()
    assert all(service.alive() for service in local_stack.services.values())


@pytest.mark.e2e
def test_the_receiver_answered_the_emulators_ping(local_stack: LocalStack, sandbox_control: httpx.Client) -> None:
    pings = sandbox_control.get("/deliveries", params={"type": "ping"}).json()
    assert any(p["status"] == "success" and p["url"] == local_stack.webhook_url for p in pings), pings


def test_serve_builds_every_deployment_of_prefect_yaml_and_nothing_else() -> None:
    declared = yaml.safe_load(serve.PREFECT_YAML.read_text())["deployments"]
    built = [d.deployment() for d in serve.declared()]
    assert [(b.name, b.entrypoint) for b in built] == [(d["name"], d["entrypoint"]) for d in declared]
    for entry, deployment in zip(declared, built):
        module, function = entry["entrypoint"].split(":")
        assert module.startswith("flows/") and (serve.PROJECT_ROOT / module).is_file()
        assert entry["work_pool"]["name"] == "metriport-process"
        assert deployment.tags == ["metriport"]
        assert deployment.description == entry["description"]
        assert len(deployment.schedules) == len(entry.get("schedules") or [])
        assert len(deployment.triggers) == len(entry.get("triggers") or [])
        for declared_trigger, trigger in zip(entry.get("triggers") or [], deployment.triggers):
            assert set(declared_trigger["expect"]) == trigger.expect
            assert declared_trigger["parameters"] == trigger.parameters
    assert {name.split("/")[0] for name in serve.deployment_names()} == {
        "patient-records",
        "cohort-refresh",
        "bulk-patient-create",
        "bulk-document-download",
        "reconcile",
    }


def test_prefect_yaml_pulls_the_project_from_git_variables() -> None:
    pull = yaml.safe_load(serve.PREFECT_YAML.read_text())["pull"]
    clone = pull[0]["prefect.deployments.steps.git_clone"]
    assert clone["repository"] == "{{ prefect.variables.metriport_flows_repository }}"
    assert clone["branch"] == "{{ prefect.variables.metriport_flows_branch }}"


def test_patient_records_takes_one_parameter_under_the_documented_name() -> None:
    from flows.patient_records import patient_records

    assert list(patient_records.parameters.properties) == [PATIENT_RECORDS_PARAMETER]
    assert PATIENT_RECORDS_DEPLOYMENT in serve.deployment_names()


def _stubborn_family(tmp_path: Path) -> Service:
    """A parent and a child that both ignore SIGTERM: only SIGKILL to the group ends them."""
    script = textwrap.dedent(
        """
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('child', flush=True); time.sleep(600)"])
        print("parent", flush=True)
        time.sleep(600)
        """
    )
    return Service("stubborn", [sys.executable, "-c", script], {"PATH": "/usr/bin:/bin"}, tmp_path / "s.log", tmp_path)


def test_stop_ends_the_whole_process_group_even_when_sigterm_is_ignored(tmp_path: Path) -> None:
    service = _stubborn_family(tmp_path)
    service.start()
    poll_until(
        lambda: "child" in service.log_path.read_text(), timeout=20, what="waiting for the child", service=service
    )
    service.stop(grace_seconds=0.5)
    assert not service.alive()
    assert not group_alive(service.pid)


def test_a_process_that_dies_at_startup_fails_fast_with_its_log(tmp_path: Path) -> None:
    service = Service(
        "broken",
        [sys.executable, "-c", "import sys; print('no config'); sys.exit(3)"],
        {"PATH": "/usr/bin:/bin"},
        tmp_path / "b.log",
        tmp_path,
    )
    service.start()
    with pytest.raises(StackError, match="no config"):
        poll_until(lambda: False, timeout=30, what="waiting for nothing", service=service)


def test_stop_saved_only_stops_groups_that_are_still_ours(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path)
    stack.prefect_home.mkdir(parents=True)
    ours = Service(
        "ours", [sys.executable, "-c", "import time; time.sleep(600)"], stack.child_env(), tmp_path / "o.log", tmp_path
    )
    foreign = Service(
        "foreign",
        [sys.executable, "-c", "import time; time.sleep(600)"],
        {"PATH": "/usr/bin:/bin"},
        tmp_path / "f.log",
        tmp_path,
    )
    stack.services = {"ours": ours, "foreign": foreign}
    ours.start()
    foreign.start()
    try:
        stack._save_state()
        assert saved_stack_running(tmp_path)
        assert stop_saved(tmp_path, grace_seconds=5) == ["ours"]
        ours.process.wait(timeout=10)
        assert foreign.alive()
        assert not saved_stack_running(tmp_path)
    finally:
        foreign.stop(grace_seconds=1)
        ours.stop(grace_seconds=1)


def test_a_component_that_fails_to_start_stops_everything_started_before_it(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path, faults="explode=1", startup_timeout=60)
    with pytest.raises(StackError, match="emulator exited"):
        stack.start()
    assert "prefect-server" in stack.services
    assert not stack.any_alive()
    assert not (tmp_path / "stack.json").exists()
