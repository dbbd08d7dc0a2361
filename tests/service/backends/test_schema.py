"""An older database (no backend columns) gains them at start: ``create_all`` alone would not add them."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, inspect, text

from qedit.service.database import Database
from qedit.service.tables import TaskRow


def test_an_old_schema_gains_the_new_nullable_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = create_engine(url)
    columns = [c for c in TaskRow.__table__.columns if c.name not in ("route", "backend", "price_per_image")]
    with old.begin() as conn:
        cols = ", ".join(f'"{c.name}" {c.type.compile(dialect=old.dialect)}' for c in columns)
        conn.execute(text(f"CREATE TABLE qedit_tasks ({cols})"))
        conn.execute(text("INSERT INTO qedit_tasks (id, status) VALUES ('a' , 'completed')"))
    old.dispose()

    db = Database(url)
    db.create_schema()
    db.create_schema()  # twice: nothing left to add
    have = {c["name"] for c in inspect(db.engine).get_columns("qedit_tasks")}
    assert {"route", "backend", "price_per_image"} <= have
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT id, backend, route FROM qedit_tasks")).all() == [("a", None, None)]
    db.close()
