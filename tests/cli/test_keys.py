"""``qedit keys create|list|revoke`` against the store ``qedit serve`` reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from qedit.cli import main
from qedit.service.database import Database
from qedit.service.keys import KeyStore


def test_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "--data-dir", str(tmp_path), "create", "alice", "--rpm", "5", "--concurrency", "2"]) == 0
    secret = capsys.readouterr().out.splitlines()[0]
    assert secret.startswith("qk_")
    db = Database(f"sqlite:///{tmp_path / 'qedit.db'}")
    keys = KeyStore(db)
    key = keys.by_secret(secret)
    assert key is not None and (key.name, key.rate_limit_rpm, key.max_concurrent_tasks) == ("alice", 5, 2)

    assert main(["keys", "--data-dir", str(tmp_path), "list"]) == 0
    listing = capsys.readouterr().out
    assert "alice" in listing and key.prefix in listing and secret not in listing  # never the secret

    assert main(["keys", "--data-dir", str(tmp_path), "revoke", key.prefix]) == 0
    assert keys.by_secret(secret) is None
    assert main(["keys", "--data-dir", str(tmp_path), "revoke", "qk_nope"]) == 2
    assert "no single key" in capsys.readouterr().err
    db.close()


def test_bad_limits_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "--data-dir", str(tmp_path), "create", "bob", "--rpm", "0"]) == 2
    assert "--rpm" in capsys.readouterr().err
