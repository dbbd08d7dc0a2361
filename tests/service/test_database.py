"""The database URL as people write it, and the service's files kept private.

``postgresql://`` is what most people write; SQLAlchemy 2.1 reads it as psycopg 3, which qedit does
not install, so it used to end in a traceback. The data dir, database, inputs, outputs and secret
are readable by the service's user only, whatever the umask.
"""

from __future__ import annotations

import importlib.util
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from qedit.cli import main
from qedit.config import Settings
from qedit.errors import InvalidInput
from qedit.service.database import Database, postgres_driver
from qedit.service.signing import load_secret
from tests.support.databases import postgres_schema_url
from tests.support.images import b64, png_bytes
from tests.support.server import Server, wait_status


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from postgres_schema_url()


def test_a_bare_postgresql_url_uses_the_installed_driver(pg_url: str) -> None:
    bare = pg_url.replace("postgresql+psycopg2://", "postgresql://")
    assert bare.startswith("postgresql://")
    db = Database(bare)
    try:
        db.create_schema()
        assert db.engine.dialect.driver == "psycopg2"
    finally:
        db.close()


@pytest.mark.skipif(importlib.util.find_spec("psycopg") is not None, reason="psycopg 3 is installed here")
def test_a_missing_driver_is_one_line_naming_the_setting() -> None:
    with pytest.raises(InvalidInput) as err:
        postgres_driver(make_url("postgresql+psycopg://u@h/d"))
    assert err.value.field == "database_url" and "psycopg" in str(err.value) and "pip install" in str(err.value)


def test_the_cli_takes_a_bare_postgresql_url(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("QEDIT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("QEDIT_DATABASE_URL", pg_url.replace("+psycopg2", ""))
    assert main(["keys", "create", "ci"]) == 0, capsys.readouterr().err


def test_a_bad_database_url_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("QEDIT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("QEDIT_DATABASE_URL", "no such thing")
    assert main(["keys", "list"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "database_url" in err, err


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_secret_is_private_even_if_it_was_copied_in_wider(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", model="instant")
    load_secret(settings)
    assert _mode(tmp_path / "data" / "secret") == 0o600 and _mode(tmp_path / "data") == 0o700
    (tmp_path / "data" / "secret").chmod(0o644)
    load_secret(settings)
    assert _mode(tmp_path / "data" / "secret") == 0o600


def test_every_file_the_service_keeps_is_readable_by_its_user_only(tmp_path: Path) -> None:
    """Under a permissive umask (022 is common; 000 the worst), nothing is group- or world-readable."""
    data = tmp_path / "data"
    srv = Server(data, {"QEDIT_AUTH": "none"})
    old = os.umask(0o000)  # inherited by the server process
    try:
        srv.start()
    finally:
        os.umask(old)
    try:
        with srv.client() as c:
            task = wait_status(c, c.post("/v1/edits", json={"prompt": "x", "images": [b64(png_bytes())]}).json()["id"])
            assert task["status"] == "completed"
            up = c.post("/api/v3/media/uploads", json={"filename": "a.png", "size": 100}).json()["data"]
            assert c.put(up["upload"]["url"], content=png_bytes()).status_code == 200
    finally:
        srv.stop()
    assert _mode(data) == 0o700
    kept = [p for p in data.rglob("*") if p.is_file() and not p.name.startswith("server-")]  # the test's log
    names = {p.name for p in kept}
    assert {"qedit.db", "secret", "0.png", "a.png"} <= names and any(n.endswith(".png") and "-a" in n for n in names)
    wide = {str(p.relative_to(data)): oct(_mode(p)) for p in kept if _mode(p) & 0o077}
    assert not wide, wide
    for folder in (p for p in data.rglob("*") if p.is_dir()):
        assert _mode(folder) & 0o077 == 0, (folder, oct(_mode(folder)))
