"""The receiver's common startup mistakes: one clear line on stderr, exit 2, nothing created, no
temporary Prefect server, no uvicorn traceback. Real subprocesses of the installed command."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

CLI = str(Path(sys.executable).parent / "metriport-flows")


def _clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "METRIPORT_", "DATABASE_URL"))}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        DATABASE_URL=f"sqlite:///{tmp_path / 'inbox.db'}",
        **extra,
    )
    return env


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "receiver", *args],
        env=_clean_env(tmp_path, **env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_receiver_without_webhook_key_names_both_ways_and_creates_nothing(tmp_path: Path) -> None:
    done = _run(tmp_path, "--no-dispatcher")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "METRIPORT_WEBHOOK_KEY" in lines[0] and "Prefect Secret block 'metriport-webhook-key'" in lines[0]
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "inbox.db").exists()
    assert not list((tmp_path / "prefect-home").glob("*.db")), "a temporary Prefect server was started"


def test_receiver_dispatcher_without_prefect_api_url_is_refused(tmp_path: Path) -> None:
    done = _run(tmp_path, METRIPORT_WEBHOOK_KEY="k" * 32)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "PREFECT_API_URL is not set" in done.stderr and "--no-dispatcher" in done.stderr
    assert not (tmp_path / "inbox.db").exists()
    assert not list((tmp_path / "prefect-home").glob("*.db")), "a temporary Prefect server was started"


def test_second_receiver_on_busy_port_says_so_before_startup(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _run(tmp_path, "--no-dispatcher", "--port", str(port), METRIPORT_WEBHOOK_KEY="k" * 32)
    assert done.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in done.stderr
    assert "startup complete" not in done.stderr + done.stdout
    assert not (tmp_path / "inbox.db").exists()


def test_several_receiver_processes_without_their_dispatchers_are_refused(tmp_path: Path) -> None:
    done = _run(tmp_path, "--no-dispatcher", "--workers", "2", METRIPORT_WEBHOOK_KEY="k" * 32)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert "--workers runs a dispatcher in every process" in done.stderr
    assert not (tmp_path / "inbox.db").exists()
