"""``qedit memory``: a snapshot's numbers are its headers' sums, a spec name answers without weights,
``--json`` carries every figure, and a wrong path or file is one line with exit code 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from qedit.cli import main
from qedit.loras.header import read_header

COMPONENTS = ("transformer", "text_encoder", "vae")
OFFLOADS = ("none", "model", "group", "sequential")


def header_bytes(folder: Path) -> int:
    return sum(read_header(f, "test").data_bytes for f in folder.glob("*.safetensors"))


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["memory", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_snapshot_numbers_are_the_header_sums(tiny_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(capsys, str(tiny_path), "--dtype", "fp32")
    assert out["source"] == "headers" and out["dtype"] == "fp32"
    total = 0
    for name in COMPONENTS:
        stored = header_bytes(tiny_path / name)
        component = out["components"][name]
        assert component["stored_bytes"] == stored
        assert component["bytes"]["none"] == stored  # stored in fp32, loaded in fp32
        total += stored
    assert out["components"]["transformer"]["bytes"]["int8"] < 0.3 * out["components"]["transformer"]["stored_bytes"]
    assert set(out["peak"]) == set(OFFLOADS)
    assert out["peak"]["none"]["none"]["bytes"] == total + out["activation_allowance_bytes"]
    assert out["peak"]["none"]["none"]["fits_gib"] == [24, 48, 80]


def test_spec_name_answers_from_known_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["memory", "qwen-image-edit-2509"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("qwen-image-edit-2509: known sizes of the real checkpoints; weights load in bf16")
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.split()}
    assert rows["transformer"][:2] == ["38.05", "38.05"]  # GiB: stored and loaded in bf16
    assert rows["none"][:2] == ["57.74", "[80]"]  # the whole model in bf16 with the allowance: an 80 GB card
    assert rows["model"][-2:] == ["14.95", "[24]"]  # model offload + nf4: a 24 GB card
    assert rows["sequential"][-1] == "refused"  # the engine refuses sequential offload of nf4 weights
    out = run_json(capsys, "qwen-image-edit-2509")
    assert out["source"] == "known" and out["components"]["text_encoder"]["params"] == 8_292_166_656
    assert out["peak"]["none"]["none"]["fits_gib"] == [80]
    refused = out["peak"]["sequential"]["int8"]
    assert refused["bytes"] is None and refused["refused"].startswith("sequential offload cannot move int8 weights")


def test_missing_path_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["memory", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere" in err and "no snapshot" in err
    assert main(["memory", str(tmp_path)]) == 2  # a directory, but no snapshot
    assert "is not a model snapshot (no model_index.json)" in capsys.readouterr().err


def test_broken_snapshot_names_the_file(tiny_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    snap = tmp_path / "snap"
    shutil.copytree(tiny_path, snap, ignore=shutil.ignore_patterns("loras", "lightning"))
    weights = snap / "text_encoder" / "model.safetensors"
    weights.write_bytes(b"\xff" * 16)
    assert main(["memory", str(snap)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(weights) in err and "not a safetensors file" in err


def test_gguf_file_is_sized_and_a_bad_one_refused(
    tiny_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support.gguf import write_gguf

    file = write_gguf(tiny_path, tmp_path / "t.gguf")
    out = run_json(capsys, str(tiny_path), "--gguf", str(file), "--dtype", "fp32")
    assert 0 < out["components"]["transformer"]["bytes"]["gguf"] < out["components"]["transformer"]["stored_bytes"]
    assert out["components"]["vae"]["bytes"]["gguf"] == out["components"]["vae"]["stored_bytes"]
    assert main(["memory", "qwen-image-edit", "--gguf", str(tmp_path / "absent.gguf")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gguf_file: no such GGUF file" in err
