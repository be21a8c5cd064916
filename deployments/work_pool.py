"""Every deployment of `prefect.yaml` on a process work pool, running this checkout: the scale-out mode
for workers that share this machine's folder (the local scale-out stack).

Run from anywhere: `python -m deployments.work_pool [POOL]` (POOL defaults to prefect.yaml's). It creates
the pool when missing, creates or updates Metriport's rate limits, and applies each deployment with a
`set_working_directory` pull step to this checkout, so a worker started in any folder of this machine
runs the code as it is here. Workers on other machines use `prefect deploy --all` instead, whose pull
step clones the repository (see prefect.yaml and the README's "Scale out").

Requires PREFECT_API_URL, and DATABASE_URL for the rate limits.
"""

from __future__ import annotations

import asyncio
import os
import sys

import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists
from prefect.runner.storage import LocalStorage

from deployments.serve import PREFECT_YAML, PROJECT_ROOT, declared
from tasks.limits import ensure_rate_limits


def declared_pool() -> str:
    """The process work pool prefect.yaml names."""
    return str(yaml.safe_load(PREFECT_YAML.read_text())["definitions"]["work_pools"]["process_pool"]["name"])


async def ensure_pool(name: str) -> None:
    async with get_client() as client:
        try:
            await client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        except ObjectAlreadyExists:
            pass


def deploy(pool: str) -> list[str]:
    """Apply every declared deployment to `pool`; returns their `flow/deployment` names."""
    os.chdir(PROJECT_ROOT)  # entrypoints are relative to the root, as in prefect.yaml
    names = []
    for entry in declared():
        deployment = entry.deployment()
        deployment.storage = LocalStorage(path=str(PROJECT_ROOT))
        deployment.apply(work_pool_name=pool)
        names.append(entry.full_name)
    return names


def main() -> None:
    pool = sys.argv[1] if len(sys.argv) > 1 else declared_pool()
    asyncio.run(ensure_pool(pool))
    ensure_rate_limits()
    for name in deploy(pool):
        print(f"deployed {name} to work pool {pool}")


if __name__ == "__main__":
    main()
