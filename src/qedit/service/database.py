"""The task database: one SQLAlchemy engine and its transactions, shared by tasks, outbox and keys.

SQLite by default (WAL, one file in the data dir); any SQLAlchemy URL works, PostgreSQL included.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from qedit.service.tables import Base


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL lets readers (the API) run while a writer (a worker) commits; busy_timeout queues writers."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def connect(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
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

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._sessions() as s, s.begin():
            yield s
