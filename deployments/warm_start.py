"""Flow runs start as forks of a warm process, not as fresh interpreters.

Prefect's runner starts every flow run with `run_flow_in_subprocess`, which spawns a new Python: it
imports Prefect, our library and the flow before the run's first line (about 1.5 s alone on a 2-core
machine, several seconds when a burst of resumed runs start together and share the cores). A suspended
run pays that on every resume. Here the runs are forked from multiprocessing's fork server, which has
imported all of that once (`preload`), so a run's process is ready in milliseconds and is still a fresh,
single-threaded process of its own: the runner tracks, cancels and reaps it exactly as before (it has a
pid, `join`, `exitcode`).

The seam: Prefect's direct starter calls the module-level `run_flow_in_subprocess` of
`prefect.runner._starter_direct` and says to patch that name to override it. `use_warm_starts` does so,
explicitly, from the serving process. `start_flow_run` is Prefect 3.9's function but for the start
method, the flow passed by module and name, and the process named after its run.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.forkserver
import os
import sys
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from importlib import import_module
from pathlib import Path
from typing import Any, cast

import prefect.runner._starter_direct as direct_starter
from prefect.client.schemas.objects import FlowRun
from prefect.context import SettingsContext, get_settings_context, serialize_context
from prefect.engine import handle_engine_signals
from prefect.flow_engine import (
    _CONTROL_CHANNEL_ENV_KEYS,
    _run_serialized_call_with_control_bootstrap,
    _runtime_subprocess_env,
    run_flow,
)
from prefect.flows import Flow
from prefect.futures import PrefectFuture
from prefect.settings.context import get_current_settings
from prefect.settings.models.root import Settings
from prefect.utilities.callables import cloudpickle_wrapped_call
from prefect.utilities.processutils import sanitize_subprocess_env

FORK_SERVER = multiprocessing.get_context("forkserver")
COMM_LENGTH = 15


def use_warm_starts(preload: Sequence[str]) -> None:
    """Start this process's flow runs as forks of a fork server that has imported `preload` (module
    names); the server starts now, so the first run does not wait for its imports."""
    FORK_SERVER.set_forkserver_preload(["__main__", "prefect.flow_engine", *preload])
    multiprocessing.forkserver.ensure_running()
    # Prefect annotates a SpawnProcess; its starter uses only `pid`, `join` and `exitcode`.
    direct_starter.run_flow_in_subprocess = start_flow_run  # type: ignore[attr-defined,assignment]


def start_flow_run(
    flow: Flow[..., Any],
    flow_run: FlowRun | None = None,
    parameters: dict[str, Any] | None = None,
    wait_for: Iterable[PrefectFuture[Any]] | None = None,
    context: dict[str, Any] | None = None,
    env: dict[str, str | None] | None = None,
) -> multiprocessing.process.BaseProcess:
    """`prefect.flow_engine.run_flow_in_subprocess`, forked from the fork server instead of spawned."""
    merged_env: dict[str, str | None] = {
        **get_current_settings().to_environment_variables(exclude_unset=True),
        **os.environ,
        "PREFECT__ENABLE_CANCELLATION_AND_CRASHED_HOOKS": "false",
        **(env or {}),
    }
    sanitized_env = sanitize_subprocess_env(merged_env)
    wrapped_call = cast(
        "partial[bytes]",
        cloudpickle_wrapped_call(
            _run_flow_with_env,
            env=_runtime_subprocess_env(sanitized_env),
            remove_env={key for key, value in merged_env.items() if value is None},
            flow=_by_reference(flow),
            flow_run=flow_run,
            parameters=parameters,
            wait_for=wait_for,
            context=context or serialize_context(),
        ),
    )
    startup_env = {key: value for key, value in sanitized_env.items() if key in _CONTROL_CHANNEL_ENV_KEYS}
    process = FORK_SERVER.Process(
        target=_run_serialized_call_with_control_bootstrap, args=(wrapped_call.args[0], startup_env)
    )
    process.start()
    return process


@dataclass(frozen=True)
class FlowReference:
    """A flow by its module and name: the fork server has imported it, and unpickling the flow itself
    would rebuild its function without the names its string annotations need."""

    module: str
    name: str

    def load(self) -> Flow[..., Any]:
        flow = getattr(import_module(self.module), self.name)
        if not isinstance(flow, Flow):
            raise TypeError(f"{self.module}:{self.name} is a {type(flow).__name__}, not a flow")
        return flow


def _by_reference(flow: Flow[..., Any]) -> Flow[..., Any] | FlowReference:
    """The flow's reference when its module holds it under its function's name, else the flow."""
    module, name = flow.fn.__module__, flow.fn.__name__
    return FlowReference(module, name) if getattr(sys.modules.get(module), name, None) is flow else flow


def _name_process(flow_run_id: str) -> None:
    """Name this process after its flow run (`ps`, /proc/PID/comm: the id's first 15 characters, the
    kernel's limit): every fork shares the fork server's command line and environment, where a spawned
    run showed its id."""
    with suppress(OSError):  # not Linux
        Path("/proc/self/comm").write_text(flow_run_id[:COMM_LENGTH])


def _run_flow_with_env(
    *, env: dict[str, str], remove_env: set[str], flow: Flow[..., Any] | FlowReference, **kwargs: Any
) -> None:
    """In the run's process: its environment and settings, then the flow (as Prefect's own wrapper)."""
    if isinstance(flow, FlowReference):
        flow = flow.load()
    flow_run: FlowRun | None = kwargs.get("flow_run")
    if flow_run is not None:
        _name_process(str(flow_run.id))
    for key in remove_env:
        os.environ.pop(key, None)
    os.environ.update(env)
    with SettingsContext(profile=get_settings_context().profile, settings=Settings()):
        with handle_engine_signals(flow_run.id if flow_run is not None else None):
            outcome = run_flow(flow, **kwargs)
            if asyncio.iscoroutine(outcome):
                asyncio.run(outcome)
