"""Which stack an operator command talks to: the environment's, or a kept local stack's.

A local stack (`make demo DEMO_ARGS=--keep`) writes `stack.json` in its folder (`.demo` by default) with
its inbox database, Prefect API and Metriport URLs. `--stack DIR` reads that file; without it, and
without DATABASE_URL or PREFECT_API_URL in the environment, `./.demo/stack.json` is used when present.
The file is plain JSON: the library reads it by path and never imports the dev tooling.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from metriport_flows.settings import Settings
from metriport_flows.webhook.prefect_api import configured_api_url

STACK_FILE = "stack.json"
DEFAULT_STACK_DIR = Path(".demo")


class TargetError(RuntimeError):
    """The command cannot tell what to talk to, or what it names is not there."""


@dataclass(frozen=True)
class Target:
    """The settings an operator command uses, and where they came from (said to the user)."""

    settings: Settings
    prefect_api_url: str | None
    source: str

    def describe(self) -> str:
        return (
            f"Using {self.source}: inbox {shown_database(self.settings.database_url)}, "
            f"Prefect API {self.prefect_api_url or '(none: PREFECT_API_URL not set)'}, "
            f"Metriport {self.settings.metriport_base_url}"
        )


def shown_database(url: str) -> str:
    """The database URL without its password."""
    return make_url(url).render_as_string(hide_password=True)


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if not parsed.get_backend_name() == "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def resolve_target(stack_dir: Path | None) -> Target:
    """`--stack DIR`, else the environment when it names a stack, else a kept `./.demo`, else defaults."""
    if stack_dir is None and not {"DATABASE_URL", "PREFECT_API_URL"} & set(os.environ):
        if (DEFAULT_STACK_DIR / STACK_FILE).exists():
            stack_dir = DEFAULT_STACK_DIR
    if stack_dir is None:
        return Target(Settings(), configured_api_url(), "the environment")
    state_path = stack_dir / STACK_FILE
    if not state_path.exists():
        raise TargetError(f"no running local stack under {stack_dir} ({state_path} not found)")
    state = json.loads(state_path.read_text())
    try:
        settings = Settings(
            database_url=state["database_url"],
            bundle_dir=Path(state["bundle_dir"]),
            metriport_base_url=state["metriport_base_url"],
        )
        api_url = str(state["prefect_api_url"])
    except KeyError as exc:
        raise TargetError(f"{state_path} lacks {exc}: restart the stack with this version") from None
    return Target(settings, api_url, f"the local stack in {stack_dir}")


def require_existing_database(url: str) -> None:
    """Reading must never create an empty SQLite database (and report empty tables from it)."""
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise TargetError(f"no inbox database at {path}: start the stack, pass --stack DIR, or set DATABASE_URL")
