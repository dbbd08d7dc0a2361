"""``qedit serve``, ``worker`` and ``keys`` build their settings one way: given flags over ``QEDIT_*``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from qedit.cli.service_settings import settings_from_args
from qedit.errors import InvalidInput


def test_given_flags_override_the_environment_and_fixed_values_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QEDIT_PORT", "9000")
    monkeypatch.setenv("QEDIT_MODEL", "tiny-plus")
    args = argparse.Namespace(port=None, model="instant", data_dir=tmp_path, log_level="info", dispatch="embedded")
    settings = settings_from_args(args, dispatch="celery")
    assert (settings.port, settings.model, settings.data_dir, settings.dispatch) == (
        9000,
        "instant",
        tmp_path,
        "celery",
    )


def test_a_refused_value_names_the_flag_or_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidInput) as e:
        settings_from_args(argparse.Namespace(port=99999))
    assert e.value.field == "--port" and "99999" in e.value.message
    monkeypatch.setenv("QEDIT_WORKERS", "100")
    with pytest.raises(InvalidInput) as e:
        settings_from_args(argparse.Namespace(port=None))
    assert e.value.field == "QEDIT_WORKERS" and "100" in e.value.message


def test_serve_takes_the_lora_allow_list_as_repeatable_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qedit.cli import build_parser

    monkeypatch.setenv("QEDIT_LORA_URL_HOSTS", "example.com")
    argv = ["serve", "--data-dir", str(tmp_path), "--lora-dir", str(tmp_path / "a"), "--lora-dir", str(tmp_path / "b")]
    argv += ["--lora-hub-org", "lightx2v", "--lightning-dir", str(tmp_path / "l")]
    settings = settings_from_args(build_parser().parse_args(argv))
    assert settings.lora_dirs == [tmp_path / "a", tmp_path / "b"]
    assert settings.lora_hub_orgs == ["lightx2v"] and settings.lora_url_hosts == ["example.com"]
    assert settings.lightning_dirs == [tmp_path / "l"]
