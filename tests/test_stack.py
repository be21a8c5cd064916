"""The local stack: everything starts and answers, stopping leaves no process, the deployments agree."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import httpx
import pytest
import yaml

from metriport_flows.deployments import serve
from metriport_flows.processes import Service, StackError, group_alive, poll_until
from metriport_flows.stack import LocalStack, saved_stack_running, stop_saved

PREFECT_YAML = Path(serve.__file__).with_name("prefect.yaml")
PROJECT_ROOT = Path(serve.__file__).parents[2]


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


def test_prefect_yaml_declares_what_serve_serves() -> None:
    declared = yaml.safe_load(PREFECT_YAML.read_text())["deployments"]
    by_entrypoint = {(d["entrypoint"], d["name"]): d for d in declared}
    assert len(by_entrypoint) == len(serve.SERVED)
    for served in serve.SERVED:
        module, function = served.flow.split(":")
        entry = by_entrypoint[(f"metriport_flows/flows/{module}.py:{function}", served.name)]
        assert entry["work_pool"]["name"] == "metriport-process"
        assert (PROJECT_ROOT / entry["entrypoint"].split(":")[0]).is_file()
        assert len(entry.get("triggers", [])) == len(served.triggers)
        for declared_trigger, trigger in zip(entry.get("triggers", []), served.triggers):
            assert set(declared_trigger["expect"]) == trigger.expect
            assert declared_trigger["parameters"] == trigger.parameters


def test_patient_records_takes_one_parameter_under_the_documented_name() -> None:
    from metriport_flows.flows.patient_records import patient_records

    assert list(patient_records.parameters.properties) == [serve.PATIENT_RECORDS_PARAMETER]


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
    poll_until(lambda: "child" in service.log_path.read_text(), timeout=20, what="waiting for the child",
               service=service)
    service.stop(grace_seconds=0.5)
    assert not service.alive()
    assert not group_alive(service.pid)


def test_a_process_that_dies_at_startup_fails_fast_with_its_log(tmp_path: Path) -> None:
    service = Service("broken", [sys.executable, "-c", "import sys; print('no config'); sys.exit(3)"],
                      {"PATH": "/usr/bin:/bin"}, tmp_path / "b.log", tmp_path)
    service.start()
    with pytest.raises(StackError, match="no config"):
        poll_until(lambda: False, timeout=30, what="waiting for nothing", service=service)


def test_stop_saved_only_stops_groups_that_are_still_ours(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path)
    stack.prefect_home.mkdir(parents=True)
    ours = Service("ours", [sys.executable, "-c", "import time; time.sleep(600)"], stack._child_env(),
                   tmp_path / "o.log", tmp_path)
    foreign = Service("foreign", [sys.executable, "-c", "import time; time.sleep(600)"], {"PATH": "/usr/bin:/bin"},
                      tmp_path / "f.log", tmp_path)
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
