"""The engine, sessions and schema of the store."""

from __future__ import annotations

from typing import Any

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.sql.dml import UpdateBase
from sqlmodel import Session
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random

from metriport_flows.store.engine import alembic_config, make_engine, upgrade


class StoreBase:
    """The engine and the session; the queries live in `waits.py` and `inbox.py`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.is_postgres = self.engine.dialect.name == "postgresql"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.engine.url.render_as_string(hide_password=True)!r})"

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def _changed(self, statement: UpdateBase) -> int:
        """Run one UPDATE in its own transaction; how many rows it changed (compare-and-set: 0 or 1)."""
        with self.session() as session:
            count = session.exec(statement).rowcount
            session.commit()
        return count

    def _insert(self, model: type) -> Any:
        return (postgresql.insert if self.is_postgres else sqlite.insert)(model)

    # -- schema -------------------------------------------------------------------------------

    @retry(
        retry=retry_if_exception_type((OperationalError, IntegrityError)),
        stop=stop_after_attempt(5),
        wait=wait_random(0.1, 0.5),
        reraise=True,
    )
    def migrate(self) -> None:
        """Bring the schema to the newest revision (a no-op when it is there already)."""
        head = ScriptDirectory.from_config(alembic_config(self.engine)).get_current_head()
        with self.engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
        if current != head:
            upgrade(self.engine)

    def ping(self) -> bool:
        with self.engine.connect() as connection:
            return bool(connection.execute(text("SELECT 1")).scalar_one() == 1)

    def dispose(self) -> None:
        self.engine.dispose()
