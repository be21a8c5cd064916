"""Engine from DATABASE_URL: SQLite (WAL, busy timeout, folder created) or PostgreSQL, and migrations."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry

from metriport_flows.domain.file_names import private_file, private_folder

MIGRATIONS = Path(__file__).parent / "migrations"
# The advisory lock a migration holds on PostgreSQL (its key: "mfmg" in ASCII).
MIGRATION_LOCK = 0x6D666D67


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            # bodies hold PHI: folder 0700, file 0600; SQLite gives -wal and -shm the file's mode
            database = Path(parsed.database).expanduser()
            private_folder(database.parent)
            private_file(database)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def alembic_config(engine: Engine) -> Config:
    """An alembic config that needs no alembic.ini: env.py takes the connection from its attributes."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate in one transaction. On PostgreSQL it first takes MIGRATION_LOCK: processes starting at once
    on a fresh database (the receiver's uvicorn workers) would each create the tables, and all but one
    fail on "already exists"; with the lock the others wait for its commit and find the schema done.
    (SQLite takes its database lock for the DDL; the store retries a locked one.)"""
    config = alembic_config(engine)
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
