"""Shared fixtures: the tiny snapshots are written once per test session, into a private cache.

``QEDIT_CACHE`` points at a session temp dir so ``--model tiny`` in CLI tests loads the same
snapshot through the normal loader, and nothing touches the user's ~/.cache.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def qedit_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cache = tmp_path_factory.mktemp("qedit-cache")
    old = os.environ.get("QEDIT_CACHE")
    os.environ["QEDIT_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("QEDIT_CACHE", None)
    else:
        os.environ["QEDIT_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_path(qedit_cache: Path) -> Path:
    from qedit.engine.tiny import ensure_tiny

    return ensure_tiny("tiny")


@pytest.fixture(scope="session")
def tiny_plus_path(qedit_cache: Path) -> Path:
    from qedit.engine.tiny import ensure_tiny

    return ensure_tiny("tiny-plus")


@pytest.fixture(scope="session")
def tiny_engine(tiny_path: Path):  # -> qedit.engine.pipeline.Engine
    from qedit.engine.pipeline import Engine

    return Engine.load(str(tiny_path))


@pytest.fixture(scope="session")
def tiny_plus_engine(tiny_plus_path: Path):
    from qedit.engine.pipeline import Engine

    return Engine.load(str(tiny_plus_path))


REDIS_URL = os.environ.get("QEDIT_TEST_REDIS", "redis://127.0.0.1:6379/11")


@pytest.fixture
def redis_url() -> str:
    """The machine's Redis (a database of its own); skips, saying why, when none is reachable."""
    redis = pytest.importorskip("redis", reason="redis-py is not installed")
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as e:
        pytest.skip(f"Redis at {REDIS_URL} is unreachable ({type(e).__name__}); set QEDIT_TEST_REDIS")
    return REDIS_URL
