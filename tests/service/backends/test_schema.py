"""An older database (no backend columns) gains them at start: ``create_all`` alone would not add them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import JSON, Boolean, Float, Integer, MetaData, Table, create_engine, inspect, text
from sqlalchemy.types import TypeDecorator

from qedit.service.database import Database, connect
from qedit.service.tables import TaskRow
from tests.support.databases import postgres_schema_url

NEW = ("route", "backend", "price_per_image")


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
    else:
        yield from postgres_schema_url()


def test_an_old_schema_gains_the_new_nullable_columns(url: str) -> None:
    old = connect(url) if url.startswith("postgresql") else create_engine(url)
    previous = MetaData()  # qedit_tasks as the previous version made it
    table = Table("qedit_tasks", previous, *[c._copy() for c in TaskRow.__table__.columns if c.name not in NEW])
    previous.create_all(old)
    values = {c.name: _filler(c.type) for c in table.columns if not c.nullable}
    with old.begin() as conn:  # a task of the old version, its JSON columns written as raw text
        names = ", ".join(f'"{n}"' for n in values)
        conn.execute(text(f"INSERT INTO qedit_tasks ({names}) VALUES ({', '.join(values.values())})"))
    old.dispose()

    db = Database(url)
    db.create_schema()
    db.create_schema()  # twice: nothing left to add
    have = {c["name"] for c in inspect(db.engine).get_columns("qedit_tasks")}
    assert set(NEW) <= have
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT backend, route, price_per_image FROM qedit_tasks")).all() == [(None,) * 3]
    db.close()


def _filler(kind: object) -> str:
    if isinstance(kind, Boolean):
        return "FALSE"
    if isinstance(kind, Integer | Float):
        return "0"
    if isinstance(kind, JSON | TypeDecorator):
        return "'{}'"
    return "'a'"
