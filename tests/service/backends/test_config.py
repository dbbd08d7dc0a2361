"""The backends file: a good one parsed with its defaults, a bad one refused in one line naming file, backend, field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from qedit.errors import InvalidInput
from qedit.service.backends.config import load_backends
from tests.support.server import ROOT

GOOD = """
[[backend]]
name = "gpu-box"
kind = "local"
price_per_image = 0.004

[[backend]]
name = "other"
kind = "qedit"
url = "http://10.0.0.2:8000/"
key_env = "OTHER_KEY"
models = ["qwen-image-edit-2511"]
price_per_image = 0.01
priority = 1
max_concurrency = 8

[[backend]]
name = "wavespeed"
kind = "wavespeed"
url = "https://api.wavespeed.ai"
key_env = "WAVESPEED_API_KEY"
models = ["*"]
price_per_image = 0.03
"""


def _load(tmp_path: Path, text: str) -> list:
    f = tmp_path / "backends.toml"
    f.write_text(text)
    return load_backends(f, model="instant", local_price=0.0319)


def test_a_good_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTHER_KEY", "k-other")
    monkeypatch.setenv("WAVESPEED_API_KEY", "k-ws")
    local, other, ws = _load(tmp_path, GOOD)
    assert local.models == ["instant"] and local.price_per_image == 0.004 and local.health is None
    assert other.url == "http://10.0.0.2:8000" and other.secret == "k-other" and other.health == "/readyz"
    assert other.serves("qwen-image-edit-2511") and not other.serves("instant")
    assert other.serves("Qwen/Qwen-Image-Edit-2511")  # the canonical id tasks store
    assert ws.serves("anything") and ws.secret == "k-ws" and ws.health is None
    assert "k-other" not in repr(other) and "k-ws" not in repr(ws)


def test_the_local_price_defaults_to_the_servers(tmp_path: Path) -> None:
    (local,) = _load(tmp_path, '[[backend]]\nname = "here"\nkind = "local"\n')
    assert local.price_per_image == 0.0319


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('[[backend]]\nname = "a"\nkind = "qedit"\nmodels = ["*"]\nprice_per_image = 1\n', "backend a: url"),
        ('[[backend]]\nname = "a"\nkind = "gpu"\n', "backend a: kind"),
        ('[[backend]]\nname = "b"\nkind = "local"\nmax_concurrency = 0\n', "backend b: max_concurrency"),
        ('[[backend]]\nname = "c"\nkind = "local"\nprice_per_image = -1\n', "backend c: price_per_image"),
        ('[[backend]]\nname = "d"\nkind = "qedit"\nurl = "ftp://x"\nmodels = ["*"]\n', "backend d: url"),
        (
            '[[backend]]\nname = "e"\nkind = "wavespeed"\nurl = "https://x"\nmodels = ["*"]\n'
            'price_per_image = 1\nkey_env = "QEDIT_TEST_UNSET_KEY"\n',
            "backend e: key_env: the variable QEDIT_TEST_UNSET_KEY is not set",
        ),
        ('[[backend]]\nname = "f"\nkind = "local"\ncolour = 1\n', "backend f: colour"),
        ('[[backend]]\nname = "g"\nkind = "qedit"\nurl = "http://x"\nmodels = ["*"]\n', "backend g: price_per_image"),
        ("[[backend]\n", "not valid TOML"),
        ("", "backend: Field required"),
    ],
)
def test_a_bad_file_is_one_line_naming_file_backend_and_field(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(InvalidInput) as e:
        _load(tmp_path, text)
    message = str(e.value)
    assert "\n" not in message and str(tmp_path / "backends.toml") in message and where in message, message


def test_qedit_serve_refuses_a_bad_file_with_exit_2(tmp_path: Path) -> None:
    f = tmp_path / "backends.toml"
    f.write_text('[[backend]]\nname = "x"\nkind = "local"\nmax_concurrency = "many"\n')
    cmd = [sys.executable, "-m", "qedit.cli", "serve", "--model", "instant", "--data-dir", str(tmp_path), "--backends"]
    r = subprocess.run([*cmd, str(f)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "backend x: max_concurrency" in lines[0] and str(f) in lines[0], r.stderr
