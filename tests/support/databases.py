"""The task database backends tests run on: SQLite in a temp dir, and the Postgres on loopback.

The Postgres store lives in a schema of its own, dropped afterwards; when Postgres is unreachable
the test asking for it skips, saying so (set ``QEDIT_TEST_POSTGRES`` to point elsewhere).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

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
