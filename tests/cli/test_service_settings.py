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


def test_engine_options_and_batching_come_from_flags_or_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qedit.cli import build_parser
    from qedit.models.options import EngineOptions

    monkeypatch.setenv("QEDIT_CACHE", str(tmp_path / "models"))  # the model cache's folder, not the step cache
    monkeypatch.setenv("QEDIT_STEP_CACHE", "dbcache")
    monkeypatch.setenv("QEDIT_CACHE_WARMUP", "4")
    monkeypatch.setenv("QEDIT_TEXT_CACHE", "0")
    monkeypatch.setenv("QEDIT_BATCH_WAIT", "0.2")
    argv = [
        "--data-dir",
        str(tmp_path),
        "--quantize",
        "int8",
        "--cache",
        "taylorseer",
        "--compile",
        "--batch-size",
        "4",
    ]
    for command in ("serve", "worker"):
        settings = settings_from_args(build_parser().parse_args([command, *argv]))
        assert settings.engine_options() == EngineOptions(
            quantize="int8", cache="taylorseer", cache_warmup=4, compile=True, text_cache=0
        )
        assert (settings.batch_size, settings.batch_wait) == (4, 0.2)
    defaults = settings_from_args(build_parser().parse_args(["serve"]))
    assert defaults.engine_options() == EngineOptions(cache="dbcache", cache_warmup=4, text_cache=0)
    assert defaults.batch_size == 1


@pytest.mark.parametrize(
    ("env", "argv", "field", "said"),
    [
        ({"QEDIT_QUANTIZE": "int4"}, [], "QEDIT_QUANTIZE", "'int4'"),
        ({"QEDIT_STEP_CACHE": "lru"}, [], "QEDIT_STEP_CACHE", "'lru'"),
        ({}, ["--cache", "dbcache", "--cache-threshold", "3"], "--cache-threshold", "must be in (0, 1], got 3.0"),
        ({"QEDIT_CACHE_WARMUP": "500"}, [], "QEDIT_CACHE_WARMUP", "must be 0-100"),
        ({}, ["--quantize", "gguf"], "QEDIT_GGUF_FILE", "needs the transformer's .gguf file"),
        ({"QEDIT_QUANTIZE": "int8"}, ["--gguf", "t.gguf"], "--gguf", "needs quantize=gguf"),
        ({}, ["--device", "cpu", "--model", "tiny", "--offload", "model"], "--offload", "needs a CUDA GPU"),
        ({}, ["--batch-size", "32"], "--batch-size", "32"),
        ({"QEDIT_LEASE_SECONDS": "2"}, ["--batch-size", "2", "--batch-wait", "1"], "--batch-wait", "lease_seconds"),
    ],
)
def test_a_refused_engine_setting_is_one_line_naming_its_flag_or_variable(
    env: dict[str, str], argv: list[str], field: str, said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qedit.cli import build_parser

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(InvalidInput) as e:
        settings_from_args(build_parser().parse_args(["serve", *argv]))
    assert e.value.field == field and said in e.value.message and "\n" not in str(e.value)
