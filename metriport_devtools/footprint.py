"""What a running stack costs, per kind of process: peak resident memory and CPU seconds.

A benchmark needs more than the whole tree's peak to say what memory grows with: the flow-run processes
(`python -m prefect.engine`, bounded by the runner's or the worker's process limit) are counted apart from
the long-lived services they run under (the Prefect server, `serve`, workers, receivers, the emulator).
Every descendant of a service counts (a worker starts each flow run in a session of its own, so its
process group does not hold them). Sampled once a second from /proc (Linux only); PostgreSQL is not the
stack's child and is not counted.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

FLOW_RUN = "flow runs"
FLOW_RUN_COMMANDS = (b"prefect.engine", b"prefect.runner._workspace_supervisor")
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    kind: str
    rss_kib: int
    cpu_seconds: float


def stat_fields(proc: Path) -> list[str]:
    """/proc/PID/stat from its third field (state) on; the command name before it may hold spaces."""
    return (proc / "stat").read_text().rsplit(")", 1)[1].split()


def parents() -> dict[int, int]:
    """pid -> parent pid of every process on the machine."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = int(stat_fields(entry)[1])
            except (OSError, ValueError, IndexError):
                continue
    return found


def descendants(roots: dict[str, int]) -> dict[int, str]:
    """Every process under each root pid (the root too), with the root's name."""
    children: dict[int, list[int]] = defaultdict(list)
    for pid, parent in parents().items():
        children[parent].append(pid)
    found: dict[int, str] = {}
    for name, root in roots.items():
        todo = [root]
        while todo:
            pid = todo.pop()
            found[pid] = name
            todo += children.get(pid, [])
    return found


def read_sample(pid: int, service: str) -> Sample | None:
    """The process's kind (its service, or FLOW_RUN), resident memory and CPU time; None once it is gone."""
    proc = Path(f"/proc/{pid}")
    try:
        cmdline = (proc / "cmdline").read_bytes()
        utime, stime = stat_fields(proc)[11:13]
        status = (proc / "status").read_text()
    except OSError:
        return None
    rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    kind = FLOW_RUN if any(command in cmdline for command in FLOW_RUN_COMMANDS) else service
    return Sample(kind, rss, (int(utime) + int(stime)) / TICKS)


@dataclass
class Footprint:
    """Peaks and CPU per kind, filled by `StackSampler`."""

    peak_kib: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    peak_total_kib: int = 0
    peak_flow_runs: int = 0
    peak_per_flow_run_kib: int = 0
    last: dict[int, Sample] = field(default_factory=dict)  # every pid seen, as last sampled

    @property
    def cpu_seconds(self) -> dict[str, float]:
        """CPU time per kind: each process's as last seen (a gone process keeps its final sample)."""
        cpu: dict[str, float] = defaultdict(float)
        for sample in self.last.values():
            cpu[sample.kind] += sample.cpu_seconds
        return cpu

    def add(self, samples: dict[int, Sample]) -> None:
        self.last.update(samples)
        per_kind: dict[str, int] = defaultdict(int)
        for sample in samples.values():
            per_kind[sample.kind] += sample.rss_kib
        for kind, kib in per_kind.items():
            self.peak_kib[kind] = max(self.peak_kib[kind], kib)
        self.peak_total_kib = max(self.peak_total_kib, sum(per_kind.values()))
        runs = [s.rss_kib for s in samples.values() if s.kind == FLOW_RUN]
        self.peak_flow_runs = max(self.peak_flow_runs, len(runs))
        self.peak_per_flow_run_kib = max([self.peak_per_flow_run_kib, *runs])

    def summary(self) -> str:
        kinds = sorted(self.peak_kib, key=lambda k: -self.peak_kib[k])
        memory = ", ".join(f"{k} {self.peak_kib[k] / 1024:.0f}" for k in kinds)
        cpu_seconds = self.cpu_seconds
        cpu = ", ".join(f"{k} {cpu_seconds[k]:.0f}" for k in kinds)
        return (
            f"peak MiB by kind: {memory}; at most {self.peak_flow_runs} flow-run processes at once, "
            f"each at most {self.peak_per_flow_run_kib / 1024:.0f} MiB\n  CPU s by kind: {cpu}"
        )


class StackSampler:
    """Samples every process under the stack's services each second while in its `with` block."""

    def __init__(self, services: Callable[[], dict[str, int]]) -> None:
        self.services, self.footprint = services, Footprint()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        live: dict[int, Sample] = {}
        for pid, service in descendants(self.services()).items():
            if (sample := read_sample(pid, service)) is not None:
                live[pid] = sample
        self.footprint.add(live)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.sample()

    def __enter__(self) -> StackSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
