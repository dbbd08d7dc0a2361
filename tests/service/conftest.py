"""The task database on both supported backends: SQLite (default) and the Postgres on loopback.

The Postgres store lives in a schema of its own, dropped afterwards; when Postgres is unreachable
its tests skip, saying so.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from qedit.service.database import Database
from qedit.service.keys import KeyStore
from qedit.service.outbox import WebhookOutbox
from qedit.service.tasks import TaskStore

PG_URL = os.environ.get("QEDIT_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def postgres_schema_url() -> Iterator[str]:
    """A fresh schema on the test Postgres; skips the test when none is reachable."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed")
    schema = f"qedit_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = sqlalchemy.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    except Exception as e:
        pytest.skip(f"Postgres at {PG_URL} is unreachable ({type(e).__name__}); set QEDIT_TEST_POSTGRES")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    gen = postgres_schema_url() if request.param == "postgres" else iter([f"sqlite:///{tmp_path / 'qedit.db'}"])
    database = Database(next(gen))
    database.create_schema()
    try:
        yield database
    finally:
        database.close()
        next(gen, None)


@pytest.fixture
def tasks(db: Database) -> TaskStore:
    return TaskStore(db)


@pytest.fixture
def keys(db: Database) -> KeyStore:
    return KeyStore(db)


@pytest.fixture
def outbox(db: Database) -> WebhookOutbox:
    return WebhookOutbox(db)
