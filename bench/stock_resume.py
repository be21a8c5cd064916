"""Stock Prefect's suspend and resume, with nothing of ours: the anchor for a suspended run's webhook to code.

`python stock_resume.py NAME` serves the `stock-resume/NAME` deployment with this process's
PREFECT_RUNNER_POLL_FREQUENCY. A run suspends at once; when something resumes it, the runner starts it
again on its next poll in a new process, the flow re-runs to its suspend (which now returns) and writes
the wall-clock time its code after the suspend ran to `stamp` (a path: no data of any patient).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from prefect import flow
from prefect.flow_runs import suspend_flow_run

FLOW_NAME = "stock-resume"


@flow(name=FLOW_NAME, persist_result=True)
def stock_resume(stamp: str) -> None:
    suspend_flow_run(timeout=600, key="resume")
    Path(stamp).write_text(repr(time.time()))


if __name__ == "__main__":
    stock_resume.serve(name=sys.argv[1])
