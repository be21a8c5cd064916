"""`metriport-flows status` and `reconcile` find the stack they are meant for, say which one, never
create an empty database by reading and never start a temporary Prefect server. Real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from metriport_flows.store import open_store

CLI = str(Path(sys.executable).parent / "metriport-flows")


def _ops(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "METRIPORT_", "DATABASE_URL"))}
    clean.update(PREFECT_HOME=str(cwd / "prefect-home"), COLUMNS="200", **env)
    return subprocess.run([CLI, *args], env=clean, cwd=cwd, capture_output=True, text=True, timeout=60)


def _kept_stack(folder: Path, with_database: bool = True) -> Path:
    folder.mkdir(parents=True)
    database = folder / "inbox.db"
    if with_database:
        open_store(f"sqlite:///{database}").dispose()
    state = {
        "database_url": f"sqlite:///{database}",
        "bundle_dir": str(folder / "bundles"),
        "metriport_base_url": "http://127.0.0.1:9",
        "prefect_api_url": "http://127.0.0.1:9/api",
    }
    (folder / "stack.json").write_text(json.dumps(state))
    return database


def test_status_finds_the_kept_demo_and_says_what_it_uses(tmp_path: Path) -> None:
    database = _kept_stack(tmp_path / ".demo")
    done = _ops(tmp_path, "status", "--no-ask-metriport")
    assert done.returncode == 0, done.stderr
    assert "Using the local stack in .demo" in done.stderr
    assert f"inbox sqlite:///{database}" in done.stderr
    assert "Prefect API http://127.0.0.1:9/api" in done.stderr and "Metriport http://127.0.0.1:9" in done.stderr
    assert "Open waits (0)" in done.stdout
    assert not (tmp_path / "data").exists()


def test_status_with_stack_option_reads_that_folder(tmp_path: Path) -> None:
    _kept_stack(tmp_path / "elsewhere")
    done = _ops(tmp_path, "status", "--no-ask-metriport", "--json", "--stack", "elsewhere")
    assert done.returncode == 0, done.stderr
    assert "Using the local stack in elsewhere" in done.stderr
    assert json.loads(done.stdout)["open_waits"] == []


def test_status_never_creates_an_empty_database(tmp_path: Path) -> None:
    done = _ops(tmp_path, "status", "--no-ask-metriport")
    assert done.returncode == 2
    assert "no inbox database at data/inbox.db" in done.stderr
    assert not (tmp_path / "data").exists()

    database = _kept_stack(tmp_path / ".demo", with_database=False)
    done = _ops(tmp_path, "status", "--no-ask-metriport")
    assert done.returncode == 2 and f"no inbox database at {database}" in done.stderr
    assert not database.exists()


def test_reconcile_without_prefect_api_url_starts_no_temporary_server(tmp_path: Path) -> None:
    database = tmp_path / "inbox.db"
    open_store(f"sqlite:///{database}").dispose()
    done = _ops(tmp_path, "reconcile", DATABASE_URL=f"sqlite:///{database}")
    assert done.returncode == 2
    assert "PREFECT_API_URL is not set" in done.stderr
    assert not list((tmp_path / "prefect-home").glob("*.db")), "a temporary Prefect server was started"
