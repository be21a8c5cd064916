"""Flows served the way `deployments/serve.py` serves the product's: added to a runner as flows, each run
forked from the warm fork server (`use_warm_starts`). Each run writes its process ids (and what it was
resumed with) to `out_dir`. Served by tests/deployments/test_warm_start.py as
`python -c "from tests.deployments.warm_flows import main; main()"` (the flow's module by its name, as
the product's flows are)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from prefect import flow
from prefect.context import get_run_context
from prefect.flow_runs import suspend_flow_run
from prefect.runner import Runner

from deployments.warm_start import use_warm_starts
from metriport_flows.domain.stages import DocumentsReady, Outcome

PROBE = "warm-probe"
DEPLOYMENT = f"{PROBE}/warm-start-test"


@flow(name=PROBE)
def warm_probe(out_dir: str, mode: str = "finish", outcome: Outcome | None = None) -> None:
    """`mode`: finish at once, suspend until resumed with DocumentsReady, or block until cancelled.
    `outcome`'s annotation is a string (postponed) naming what only annotations use, as the product's
    flows' parameter models: the forked run must still resolve it."""
    run_id = str(get_run_context().flow_run.id)
    out = Path(out_dir, f"{run_id}.json")
    record = {"pid": os.getpid(), "ppid": os.getppid()}
    out.with_suffix(".started").write_text(json.dumps(record))
    if mode == "suspend":
        resumed = suspend_flow_run(wait_for_input=DocumentsReady, key="documents", timeout=None)
        record["resumed_with"] = resumed.model_dump(mode="json")
    elif mode == "block":
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until the runner kills this process
            time.sleep(0.1)
    out.write_text(json.dumps(record))


def main() -> None:
    runner = Runner(limit=4, query_seconds=1)
    runner.add_flow(warm_probe, DEPLOYMENT.split("/")[1])
    use_warm_starts([__name__])
    asyncio.run(runner.start())
