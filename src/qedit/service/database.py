"""The task database: one SQLAlchemy engine and its transactions, shared by tasks, outbox and keys.

SQLite by default (WAL, one file in the data dir); any SQLAlchemy URL works, PostgreSQL included.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from qedit.errors import InvalidInput
from qedit.files import private_file
from qedit.service.tables import Base


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL lets readers (the API) run while a writer (a worker) commits; busy_timeout queues writers."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


_PG_DRIVERS = (("psycopg2", "psycopg2"), ("psycopg", "psycopg"))  # (SQLAlchemy driver, module)


def postgres_driver(url: URL) -> URL:
    """``postgresql://`` with whichever driver is installed; a missing one is a one-line error.

    SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3, while ``qedit[scale]`` installs
    psycopg2 (the form most people write should just work). An explicit ``+driver`` is kept.
    """
    if url.get_backend_name() != "postgresql":
        return url
    wanted = [(d, m) for d, m in _PG_DRIVERS if url.drivername in ("postgresql", f"postgresql+{d}")]
    for driver, module in wanted:
        if importlib.util.find_spec(module) is not None:
            return url.set(drivername=f"postgresql+{driver}")
    if not wanted:  # another driver named explicitly (asyncpg, pg8000...): SQLAlchemy's business
        return url
    names = " or ".join(m for _, m in wanted)
    install = "pip install 'qedit[scale]'" if ("psycopg2", "psycopg2") in wanted else "pip install 'psycopg[binary]'"
    raise InvalidInput(
        f"{url.drivername}:// needs the {names} driver, which is not installed: {install}", field="database_url"
    )


def connect(url: str) -> Engine:
    try:
        parsed = postgres_driver(make_url(url))
    except ArgumentError as e:
        raise InvalidInput(f"not a database URL: {e}", field="database_url") from None
    url = parsed.render_as_string(hide_password=False)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
            private_file(Path(database))  # SQLite gives its -wal and -shm files the database's mode
        db = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=8, max_overflow=16)
        event.listen(db, "connect", _sqlite_pragmas)
        return db
    return create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=16)


class Database:
    """A connection pool and a transaction per ``with db.transaction() as s:`` block."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = connect(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._schema_lock = threading.Lock()

    def create_schema(self) -> None:
        with self._schema_lock:
            Base.metadata.create_all(self.engine)
            self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """``create_all`` makes missing tables, never missing columns: a database made by an older
        version gains the nullable columns added since (``ALTER TABLE ... ADD COLUMN``), nothing else."""
        existing = inspect(self.engine)
        for table in Base.metadata.sorted_tables:
            if not existing.has_table(table.name):
                continue
            have = {c["name"] for c in existing.get_columns(table.name)}
            missing = [c for c in table.columns if c.name not in have and c.nullable]
            if not missing:
                continue
            with self.engine.begin() as conn:
                for column in missing:
                    kind = column.type.compile(dialect=self.engine.dialect)
                    conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._sessions() as s, s.begin():
            yield s

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def serialized(self) -> Iterator[Session]:
        """A transaction that takes the database's write lock first (SQLite ``BEGIN IMMEDIATE``).

        For check-then-insert rules such as a key's concurrency limit: under SQLite's default
        (deferred) transactions two writers could both count before either inserts. On PostgreSQL
        this is an ordinary transaction; the caller locks the rows it counts against (``FOR UPDATE``).
        """
        if not self.is_sqlite:
            with self.transaction() as s:
                yield s
            return
        with self._sessions() as s:
            # pysqlite begins a transaction only before a write; an explicit BEGIN starts it now, and
            # the session's commit/rollback end it (sqlite3's commit() commits an open transaction)
            s.connection().exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise
