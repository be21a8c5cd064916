"""A stack left running (`make demo DEMO_ARGS=--keep`) is found again and stopped from its state file.

`LocalStack` writes `stack.json` under its root: its process groups, where it answers, and the token of
its PostgreSQL databases (no secrets). A group id can be reused once its group is gone, so only groups
whose processes still carry the stack's PREFECT_HOME in their environment count as ours.
"""

from __future__ import annotations

import json
from pathlib import Path

from metriport_devtools.postgres import Databases
from metriport_devtools.processes import environ_of, group_members, stop_group

STATE_FILE = "stack.json"


def _saved_groups(root: Path) -> dict[str, int]:
    """Process groups a `LocalStack` saved under `root` that are still alive and still ours."""
    state_path = Path(root) / STATE_FILE
    if not state_path.exists():
        return {}
    state = json.loads(state_path.read_text())
    marker = f"PREFECT_HOME={state['prefect_home']}".encode()
    # A group id can be reused once the group is gone: only groups that still carry our marker count.
    return {
        name: pgid
        for name, pgid in state["process_groups"].items()
        if any(marker in environ_of(pid) for pid in group_members(pgid))
    }


def saved_stack_running(root: Path) -> bool:
    return bool(_saved_groups(root))


def stop_saved(root: Path, grace_seconds: float = 10.0) -> list[str]:
    """Stop the stack a previous `LocalStack` left running under `root`; returns what was stopped."""
    groups = _saved_groups(root)
    for pgid in reversed(list(groups.values())):
        stop_group(pgid, grace_seconds)
    state_path = Path(root) / STATE_FILE
    if state_path.exists() and (token := json.loads(state_path.read_text()).get("postgres_databases")):
        Databases(token=token).drop()
    (Path(root) / STATE_FILE).unlink(missing_ok=True)
    return list(reversed(list(groups)))
