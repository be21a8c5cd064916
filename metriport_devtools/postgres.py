"""Databases of its own on a PostgreSQL server for the scale-out stack: one for the Prefect server, one
for the inbox (both keep an `alembic_version` table, so they cannot share a schema), created at start
and dropped at stop, even with connections still open."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from metriport_devtools.processes import StackError

# The machine's PostgreSQL (trust auth); SCALE_OUT_POSTGRES_URL points the stack at another server.
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ROLES = ("prefect", "inbox")


class PostgresUnavailable(StackError):
    """The scale-out stack needs PostgreSQL and it does not answer."""


def admin_url() -> str:
    return os.environ.get("SCALE_OUT_POSTGRES_URL", DEFAULT_ADMIN_URL)


def answers(url: str, timeout: int = 3) -> bool:
    try:
        psycopg.connect(url, connect_timeout=timeout).close()
    except psycopg.Error:
        return False
    return True


@dataclass
class Databases:
    """`mf_<token>_prefect` and `mf_<token>_inbox` on the server `admin` connects to."""

    admin: str = field(default_factory=admin_url)
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def name(self, role: str) -> str:
        return f"mf_{self.token}_{role}"

    def url(self, role: str, driver: str) -> str:
        """`driver` is `asyncpg` for the Prefect server, `psycopg` for the inbox."""
        url = make_url(self.admin).set(drivername=f"postgresql+{driver}", database=self.name(role))
        return url.render_as_string(hide_password=False)

    def create(self) -> None:
        if not answers(self.admin):
            raise PostgresUnavailable(
                f"PostgreSQL does not answer at {make_url(self.admin).render_as_string()}: the scale-out stack "
                "needs it (start it, or set SCALE_OUT_POSTGRES_URL to a server that answers)"
            )
        self._each("CREATE DATABASE {}")

    def drop(self) -> None:
        if answers(self.admin):
            self._each("DROP DATABASE IF EXISTS {} WITH (FORCE)")

    def _each(self, statement: str) -> None:
        with psycopg.connect(self.admin, autocommit=True) as connection:
            for role in ROLES:
                connection.execute(sql.SQL(statement).format(sql.Identifier(self.name(role))))
