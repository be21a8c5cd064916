"""The whole system on one machine, as subprocesses: what `make demo` and the end-to-end tests run.

`LocalStack(root)` starts, in dependency order and each behind a readiness poll with a deadline:
a Prefect server on SQLite, the Metriport emulator, the webhook receiver (with its dispatcher) and the
served deployments. `LocalStack(root, scale_out=True)` runs the same on Prefect's distributed path:
the Prefect server and the inbox on PostgreSQL (databases of their own, dropped at stop), two receiver
processes on the one webhook socket (each with its dispatcher), and the deployments on a process work
pool run by two workers. Everything lives under `root` (PREFECT_HOME, both SQLite files, bundles, one log
per process). Each process gets its own process group, so `stop()` (also on Ctrl-C or an exception,
through the context manager) ends it and every child it started: SIGTERM, then SIGKILL after a grace
period. The emulator's webhook key reaches the receiver the way it would in production: set the
webhook URL with `POST /settings`, read the key from the answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from pydantic import SecretStr

from metriport_devtools import project
from metriport_devtools.postgres import Databases
from metriport_devtools.processes import (
    Service,
    StackError,
    free_port,
    group_alive,
    http_ok,
    poll_until,
    venv_bin,
)
from metriport_devtools.saved_stack import STATE_FILE
from metriport_flows.domain.file_names import private_file, private_folder
from metriport_flows.settings import EMULATOR_API_KEY, Settings

__all__ = ["LocalStack", "Service", "StackError", "free_port", "poll_until"]

WEBHOOK_PATH = "/metriport/webhook"
# Environment variables the children must not inherit from whoever started the stack.
_ISOLATED_PREFIXES = ("PREFECT_", "METRIPORT_", "DATABASE_URL", "BUNDLE_DIR", "HOT_WINDOW_")


class LocalStack:
    """Prefect server + emulator + receiver/dispatcher + served deployments under one folder."""

    def __init__(
        self,
        root: Path,
        *,
        hot_window_seconds: float = 30.0,
        delay: tuple[float, float] = (0.0, 5.0),
        mode: str = "sandbox",
        faults: str | None = None,
        serve: bool = True,
        runner_process_limit: int = 10,
        startup_timeout: float = 120.0,
        grace_seconds: float = 10.0,
        extra_env: dict[str, str] | None = None,
        scale_out: bool = False,
        workers: int = 2,
        paused_schedules: tuple[str, ...] = ("cohort-refresh/nightly",),
    ) -> None:
        self.root = Path(root).resolve()
        self.hot_window_seconds = hot_window_seconds
        self.delay = delay
        self.mode = mode
        self.faults = faults
        self.serve = serve
        self.runner_process_limit = runner_process_limit
        self.startup_timeout = startup_timeout
        self.grace_seconds = grace_seconds
        self.extra_env = dict(extra_env or {})
        self.databases = Databases() if scale_out else None
        self.workers = workers
        self.paused_schedules = paused_schedules
        self.api_key = EMULATOR_API_KEY
        self.webhook_key: str | None = None
        self.services: dict[str, Service] = {}
        self.ready_after: dict[str, float] = {}  # seconds from start() until each component answered
        self.prefect_port = self.emulator_port = self.receiver_port = 0

    # Where things are: tests and the demo read these.
    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    @property
    def prefect_db_path(self) -> Path:
        return self.prefect_home / "prefect.db"

    @property
    def inbox_db_path(self) -> Path:
        return self.root / "inbox.db"

    @property
    def database_url(self) -> str:
        if self.databases is not None:
            return self.databases.url("inbox", "psycopg")
        return f"sqlite:///{self.inbox_db_path}"

    @property
    def prefect_database_url(self) -> str:
        if self.databases is not None:
            return self.databases.url("prefect", "asyncpg")
        return f"sqlite+aiosqlite:///{self.prefect_db_path}"

    @property
    def bundle_dir(self) -> Path:
        return self.root / "bundles"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def prefect_url(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"{self.prefect_url}/api"

    @property
    def emulator_url(self) -> str:
        return f"http://127.0.0.1:{self.emulator_port}"

    @property
    def receiver_url(self) -> str:
        return f"http://127.0.0.1:{self.receiver_port}"

    @property
    def webhook_url(self) -> str:
        return f"{self.receiver_url}{WEBHOOK_PATH}"

    @property
    def env(self) -> dict[str, str]:
        """The variables every component reads (secrets included: never log this)."""
        env = {
            "PREFECT_API_URL": self.prefect_api_url,
            "PREFECT_HOME": str(self.prefect_home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOCAL_STORAGE_PATH": str(self.prefect_home / "storage"),
            "DATABASE_URL": self.database_url,
            "BUNDLE_DIR": str(self.bundle_dir),
            "METRIPORT_BASE_URL": self.emulator_url,
            "METRIPORT_API_KEY": self.api_key,
            "HOT_WINDOW_SECONDS": str(self.hot_window_seconds),
            "ENVIRONMENT": "local",
            # Prefect's shortest flow heartbeat: the reconciler calls a run silent after three missed ones.
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
            # The nightly cohort refresh of every patient stays off unless asked for (a test or the chaos
            # run crossing 02:00 UTC would get one).
            "PAUSED_SCHEDULES": json.dumps(sorted(self.paused_schedules)),
        }
        if self.webhook_key:
            env["METRIPORT_WEBHOOK_KEY"] = self.webhook_key
        env.update(self.extra_env)
        return env

    def settings(self) -> Settings:
        """The same configuration as an in-process `Settings`, for tests and the demo."""
        return Settings(
            metriport_base_url=self.emulator_url,
            metriport_api_key=SecretStr(self.api_key),
            metriport_webhook_key=SecretStr(self.webhook_key) if self.webhook_key is not None else None,
            database_url=self.database_url,
            bundle_dir=self.bundle_dir,
            hot_window_seconds=self.hot_window_seconds,
            _env_file=None,
        )

    def child_env(self, **extra: str) -> dict[str, str]:
        """What a process of the stack runs with: this environment minus whoever started the stack's own
        Prefect and Metriport settings, plus `env` and `extra` (a worker or a CLI run against the stack)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(_ISOLATED_PREFIXES)}
        env.update(self.env)
        env.update(extra)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start_service(self, name: str, argv: list[str], cwd: Path | None = None, **extra_env: str) -> Service:
        """Start one more process of the stack (e.g. a work-pool worker); `stop()` stops it with the rest."""
        service = Service(name, argv, self.child_env(**extra_env), self.logs_dir / f"{name}.log", cwd or self.root)
        self.services[name] = service
        service.start()
        self._save_state()
        return service

    # Lifecycle
    def start(self) -> "LocalStack":
        for folder in (self.root, self.bundle_dir, self.prefect_home):
            private_folder(folder)
        self.prefect_port, self.emulator_port, self.receiver_port = free_port(), free_port(), free_port()
        try:
            self._start_all()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_all(self) -> None:
        timeout = self.startup_timeout
        began = time.monotonic()

        def ready(name: str) -> None:
            self.ready_after[name] = round(time.monotonic() - began, 2)

        if self.databases is not None:
            self.databases.create()
        prefect = self.start_service(
            "prefect-server",
            [venv_bin("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.prefect_port)],
            PREFECT_API_DATABASE_CONNECTION_URL=self.prefect_database_url,
            PREFECT_UI_ENABLED="true",
            PREFECT_SERVER_LOGGING_LEVEL="WARNING",
        )
        emulator_argv = [venv_bin("metriport-sandbox"), "--host", "127.0.0.1", "--port", str(self.emulator_port)]
        emulator_argv += ["--mode", self.mode, "--delay", f"{self.delay[0]:g},{self.delay[1]:g}"]
        if self.faults:
            emulator_argv += ["--faults", self.faults]
        emulator = self.start_service("emulator", emulator_argv)
        poll_until(
            lambda: http_ok(f"{self.emulator_url}/_sandbox/deliveries", any_status=True),
            timeout=timeout,
            what="waiting for the emulator",
            service=emulator,
        )
        ready("emulator")

        self.webhook_key = self._set_webhook_url()
        receiver_argv = [
            venv_bin("metriport-flows"),
            "receiver",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.receiver_port),
        ]
        receiver = self.start_service("receiver", receiver_argv + (["--workers", "2"] if self.databases else []))
        poll_until(
            lambda: http_ok(f"{self.receiver_url}/healthz"),
            timeout=timeout,
            what="waiting for the receiver",
            service=receiver,
        )
        self._set_webhook_url()
        poll_until(
            self._pinged,
            timeout=timeout,
            what="waiting for the receiver to answer the emulator's ping",
            service=receiver,
        )
        ready("receiver")
        poll_until(
            lambda: http_ok(f"{self.prefect_api_url}/health"),
            timeout=timeout,
            what="waiting for the Prefect server",
            service=prefect,
        )
        ready("prefect-server")
        if self.serve and self.databases is not None:
            self._start_workers()
            ready("workers")
        elif self.serve:
            served = self.start_service(
                "serve",
                [sys.executable, "-m", "deployments.serve"],
                cwd=project.ROOT,
                PREFECT_RUNNER_POLL_FREQUENCY="1",
                PREFECT_RUNNER_PROCESS_LIMIT=str(self.runner_process_limit),
            )
            poll_until(self._deployments_served, timeout=timeout, what="waiting for the deployments", service=served)
            ready("serve")

    def _start_workers(self) -> None:
        """Deploy this checkout to the work pool, then start the workers, each in a folder of its own."""
        pool = project.work_pool_name()
        deploying = subprocess.run(
            [sys.executable, "-m", "deployments.work_pool", pool],
            cwd=project.ROOT,
            env=self.child_env(),
            capture_output=True,
            text=True,
            timeout=self.startup_timeout,
            stdin=subprocess.DEVNULL,
        )
        if deploying.returncode != 0:
            raise StackError(f"deploying to work pool {pool} failed:\n{deploying.stderr[-3000:]}")
        for n in range(1, self.workers + 1):
            name = f"worker-{n}"
            folder = private_folder(self.root / name)
            argv = [venv_bin("prefect"), "worker", "start", "--pool", pool, "--name", name]
            worker = self.start_service(
                name, argv + ["--limit", str(self.runner_process_limit)], cwd=folder, PREFECT_WORKER_QUERY_SECONDS="1"
            )
            poll_until(
                lambda: name in self.online_workers(pool),
                timeout=self.startup_timeout,
                what=f"waiting for {name}",
                service=worker,
            )

    def online_workers(self, pool: str) -> set[str]:
        response = httpx.post(f"{self.prefect_api_url}/work_pools/{pool}/workers/filter", json={}, timeout=10.0)
        return {w["name"] for w in response.raise_for_status().json() if w["status"] == "ONLINE"}

    def _set_webhook_url(self) -> str:
        """POST /settings: the emulator answers with the webhook key (kept across URL changes) and pings."""
        response = httpx.post(
            f"{self.emulator_url}/settings",
            json={"webhookUrl": self.webhook_url},
            headers={"x-api-key": self.api_key},
            timeout=10.0,
        )
        response.raise_for_status()
        key: str = response.json()["webhookKey"]
        return key

    def _pinged(self) -> bool:
        """The emulator records every ping it sends: the last one must have got its pong."""
        pings = httpx.get(f"{self.emulator_url}/_sandbox/deliveries", params={"type": "ping"}, timeout=2.0).json()
        return bool(pings) and pings[-1]["status"] == "success"

    def _deployments_served(self) -> bool:
        for name in project.deployment_names():
            if httpx.get(f"{self.prefect_api_url}/deployments/name/{name}", timeout=2.0).status_code != 200:
                return False
        return True

    def crash(self, name: str) -> None:
        """SIGKILL the service's whole process group (a flow-run child of `serve` too), as a lost machine."""
        service = self.services[name]
        if service.process is None:
            return
        pgid = service.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        service.process.wait()
        poll_until(lambda: not group_alive(pgid), timeout=10, what=f"waiting for {name}'s processes to die")

    def restart(self, name: str) -> None:
        """Start a service again with the same command, port and environment; return once it answers."""
        service = self.services[name]
        service.start()
        self._save_state()
        checks = {
            "prefect-server": lambda: http_ok(f"{self.prefect_api_url}/health"),
            "receiver": lambda: http_ok(f"{self.receiver_url}/healthz"),
            "emulator": lambda: http_ok(f"{self.emulator_url}/_sandbox/deliveries", any_status=True),
        }
        check = checks.get(name, service.alive)
        poll_until(check, timeout=self.startup_timeout, what=f"waiting for {name} to come back", service=service)

    def stop(self) -> None:
        """Stop in reverse dependency order; safe to call twice."""
        for service in reversed(list(self.services.values())):
            service.stop(self.grace_seconds)
        if self.databases is not None:
            self.databases.drop()
        state = self.root / STATE_FILE
        if state.exists():
            state.unlink()

    def pids(self) -> dict[str, int]:
        return {name: s.pid for name, s in self.services.items() if s.pid is not None}

    def any_alive(self) -> bool:
        return any(s.group_alive() for s in self.services.values())

    def _save_state(self) -> None:
        """What `stop_saved` needs to stop a stack this process left running (`demo --keep`)."""
        state = {
            "process_groups": self.pids(),
            "prefect_home": str(self.prefect_home),
            "prefect_ui": self.prefect_url,
            "prefect_api_url": self.prefect_api_url,
            "receiver": self.receiver_url,
            "emulator": self.emulator_url,
            # What `metriport-flows status` and `reconcile` read to find this stack (no secrets).
            "database_url": self.database_url,
            "bundle_dir": str(self.bundle_dir),
            "metriport_base_url": self.emulator_url,
            "postgres_databases": self.databases.token if self.databases else None,
        }
        private_file(self.root / STATE_FILE).write_text(json.dumps(state, indent=2))

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
