"""Servers shared by the API tests: one with production defaults, one in dev mode for local URLs.

Each test gets its own API key, so it sees only its own tasks on the shared servers.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.server import Server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Production defaults (keys required, https only, no private addresses), instant engine."""
    srv = Server(tmp_path_factory.mktemp("srv"), {"QEDIT_INSTANT_STEP_DELAY": "0.03"}).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Dev settings: http and loopback URLs allowed (local image hosts, local webhook receivers)."""
    env = {
        "QEDIT_ALLOW_PRIVATE_URLS": "true",
        "QEDIT_ALLOW_HTTP_URLS": "true",
        "QEDIT_WEBHOOK_BACKOFF": "0.2",
        "QEDIT_WEBHOOK_TIMEOUT": "3",
        "QEDIT_INSTANT_STEP_DELAY": "0.03",
    }
    srv = Server(tmp_path_factory.mktemp("dev"), env).start()
    yield srv
    srv.stop()


@pytest.fixture
def key(server: Server) -> str:
    return server.create_key()


@pytest.fixture
def client(server: Server, key: str) -> Iterator[httpx.Client]:
    with server.client(key) as c:
        yield c


@pytest.fixture
def dev_key(dev_server: Server) -> str:
    return dev_server.create_key()


@pytest.fixture
def dev_client(dev_server: Server, dev_key: str) -> Iterator[httpx.Client]:
    with dev_server.client(dev_key) as c:
        yield c
