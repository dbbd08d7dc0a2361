"""The task database on both supported backends: SQLite (default) and the Postgres on loopback.

The Postgres store lives in a schema of its own (``tests.support.databases``), dropped afterwards;
when Postgres is unreachable its tests skip, saying so.

``core`` / ``make_core``: the service's shared parts as ``build_core`` wires them (SQLite in
``tmp_path``, the instant engine's settings, local http webhooks allowed), for the unit tests of the
worker, the dispatcher, the webhook sender and the input reader; ``receiver`` a local HTTP server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from qedit.config import Settings
from qedit.interfaces import webhook_payload
from qedit.service.database import Database
from qedit.service.keys import KeyStore
from qedit.service.outbox import WebhookOutbox
from qedit.service.tasks import TaskStore
from qedit.service.wiring import Core, build_core
from tests.support.databases import postgres_schema_url
from tests.support.receiver import Receiver

DEV_SETTINGS: dict[str, Any] = {
    "model": "instant",
    "allow_private_urls": True,  # webhooks and image hosts on 127.0.0.1
    "allow_http_urls": True,
    "webhook_backoff": 0,
    "webhook_timeout": 5,
    "webhook_retries": 2,
}


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


@pytest.fixture
def make_core(tmp_path: Path) -> Iterator[Callable[..., Core]]:
    """``make_core(**settings)``: a ``Core`` on ``tmp_path/data`` with ``DEV_SETTINGS`` plus these."""
    made: list[Core] = []

    def make(**overrides: Any) -> Core:
        settings = Settings(**{**DEV_SETTINGS, "data_dir": tmp_path / "data", **overrides})
        made.append(build_core(settings, webhook_payload))
        return made[-1]

    yield make
    for core in made:
        core.db.close()


@pytest.fixture
def core(make_core: Callable[..., Core]) -> Core:
    return make_core()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()
