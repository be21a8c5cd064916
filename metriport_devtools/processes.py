"""Subprocesses that die with their children: process groups, readiness polls with deadlines.

Each service runs in its own session (process group), so stopping it also stops whatever it spawned
(a Prefect runner's flow-run processes, uvicorn workers): SIGTERM to the group, SIGKILL after a grace
period. Linux only (/proc tells live members from zombies).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from tenacity import (
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_delay,
    wait_fixed,
)

from metriport_flows.domain.file_names import private_file, private_folder


class StackError(RuntimeError):
    """A process of the stack did not start or died; the message ends with its log's tail."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def group_alive(pgid: int) -> bool:
    """True while a live (not zombie) process is in the group; init reaps orphaned zombies lazily."""
    return bool(group_members(pgid))


def stop_group(pgid: int, grace_seconds: float) -> None:
    """SIGTERM the whole group, SIGKILL whatever is left after the grace period."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_seconds
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if group_alive(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return


@dataclass
class Service:
    """One subprocess of the stack, in its own process group, logging to its own file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        private_folder(self.log_path.parent)
        with open(private_file(self.log_path), "ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def group_alive(self) -> bool:
        return self.process is not None and group_alive(self.process.pid)

    def stop(self, grace_seconds: float) -> None:
        if self.process is None:
            return
        pgid = self.process.pid
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.process.wait()
        # The leader is reaped; anything left in its group (a flow-run child) gets the same treatment.
        stop_group(pgid, grace_seconds)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def poll_until(check: Callable[[], bool], *, timeout: float, what: str, service: Service | None = None) -> None:
    """Poll `check` every 0.2 s until it is true; fail early if `service` died, late on the deadline."""

    def attempt() -> bool:
        if service is not None and not service.alive():
            raise StackError(f"{service.name} exited while {what}:\n{service.log_tail()}")
        return check()

    retrying = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(0.2),
        retry=retry_if_result(lambda ok: not ok) | retry_if_exception_type(httpx.TransportError),
        reraise=True,
    )
    try:
        ok = retrying(attempt)
    except httpx.TransportError as exc:
        raise StackError(f"timed out after {timeout:.0f} s {what}: {exc!r}") from exc
    if not ok:
        tail = f":\n{service.log_tail()}" if service else ""
        raise StackError(f"timed out after {timeout:.0f} s {what}{tail}")


def http_ok(url: str, *, any_status: bool = False) -> bool:
    response = httpx.get(url, timeout=2.0)
    return any_status or response.status_code == 200


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group, from /proc (zombies excluded)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def environ_of(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def comm_of(pid: int) -> str:
    """The process's name (/proc/PID/comm, what `ps` shows); a forked flow run's is its run id's start."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def venv_bin(name: str) -> str:
    """A console script installed beside this interpreter (the venv's), else from PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name
