"""The Prefect project this tooling runs: the checkout it is installed from (an editable install).

The project's `flows/`, `tasks/` and `deployments/` are not installed: Prefect loads them from the
project root (the working directory of `serve` or the clone of a worker's pull step). The local stack
starts `serve` there and reads the deployments' names from it.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def deployment_names() -> list[str]:
    """`flow/deployment` names declared in the root `prefect.yaml`."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from deployments.serve import deployment_names as declared_names

    return declared_names()


def work_pool_name() -> str:
    """The process work pool the root `prefect.yaml` deploys to."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from deployments.work_pool import declared_pool

    return declared_pool()
