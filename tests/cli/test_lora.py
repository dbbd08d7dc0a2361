"""``--lora`` / ``--fast`` on the edit commands, ``qedit lora inspect``, and the Lightning listing of
``qedit models`` and ``qedit tiny-model --with-loras``.

One test runs a real process on the tiny preset with a LoRA and ``--fast 8``; the refusals run the
command in-process with the model loader replaced by a recorder, to prove they come before any load.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qedit import imageio
from qedit.cli import edit_flags, main
from qedit.loras import lightning
from qedit.loras.anatomy import FORMATS
from tests.support.engines import DriftEngine

FAMILY = "Qwen-Image-Edit"  # the tiny preset's Lightning family


def qedit(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "qedit.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def write_safetensors(path: Path, tensors: dict[str, tuple[str, tuple[int, ...], bytes]]) -> Path:
    """A safetensors file from raw bytes (``dtype, shape, data``): any dtype, bf16 included."""
    header: dict[str, object] = {}
    offset = 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + b"".join(d for _, _, d in tensors.values()))
    return path


def f32(shape: tuple[int, ...]) -> tuple[str, tuple[int, ...], bytes]:
    return "F32", shape, np.zeros(shape, np.float32).tobytes()


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("in") / "photo.png"
    Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((256, 192)).save(path)
    return path


@pytest.fixture(scope="module")
def inner(tiny_path: Path) -> int:
    """The tiny transformer's width (the in/out features of its attention projections)."""
    config = json.loads((tiny_path / "transformer" / "config.json").read_text())
    return config["num_attention_heads"] * config["attention_head_dim"]


@pytest.fixture(scope="module")
def misfit(tmp_path_factory: pytest.TempPathFactory, inner: int) -> Path:
    """A LoRA whose to_q takes one feature too many, and which adapts a block the model lacks."""
    return write_safetensors(
        tmp_path_factory.mktemp("misfit") / "misfit.safetensors",
        {
            "transformer.transformer_blocks.0.attn.to_q.lora_A.weight": f32((4, inner + 1)),
            "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": f32((inner, 4)),
            "transformer.transformer_blocks.0.attn.to_k.lora_A.weight": f32((4, inner)),
            "transformer.transformer_blocks.0.attn.to_k.lora_B.weight": f32((inner, 4)),
            "transformer.transformer_blocks.7.attn.to_k.lora_A.weight": f32((4, inner)),
            "transformer.transformer_blocks.7.attn.to_k.lora_B.weight": f32((inner, 4)),
        },
    )


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory, tiny_path: Path) -> Path:
    """The tiny snapshot without its sample LoRAs and Lightning files."""
    path = tmp_path_factory.mktemp("bare") / "tiny-bare"
    shutil.copytree(tiny_path, path, ignore=shutil.ignore_patterns("loras", "lightning"))
    return path


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """Every model load, by its --model (a refused request must load none)."""
    seen: list[str | None] = []

    def load(args):  # type: ignore[no-untyped-def]
        seen.append(args.model)
        raise AssertionError("the request should have been refused before the model loads")

    monkeypatch.setattr(edit_flags, "load_engine", load)
    return seen


@pytest.fixture
def no_lightning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Lightning folder as the only configured one."""
    empty = tmp_path / "lightning-empty"
    empty.mkdir()
    monkeypatch.setenv("QEDIT_LIGHTNING_DIR", str(empty))
    return empty


# -- qedit edit --lora / --fast --------------------------------------------------------------------


def test_edit_with_a_lora_and_fast_records_both(photo: Path, tmp_path: Path, tiny_path: Path) -> None:
    lora = tiny_path / "loras" / "style-kohya.safetensors"
    out = tmp_path / "out.png"
    r = qedit(
        "edit", str(photo), "-p", "make it brighter", "-o", str(out), "--model", "tiny", "--seed", "5",
        "--lora", f"{lora}:0.8", "--fast", "8",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    meta = imageio.read_metadata(out)
    assert meta["fast"] == "8" and meta["steps"] == "8" and meta["cfg"] == "1"
    ran = json.loads(meta["loras"])
    assert [r["name"] for r in ran] == [Path(lightning.file_name(FAMILY, 8)).stem, "style-kohya"]
    assert ran[1] == {"name": "style-kohya", "sha256": hashlib.sha256(lora.read_bytes()).hexdigest(), "scale": 0.8}
    assert json.loads(meta["params"])["loras"] == [{"path": str(lora), "scale": 0.8}]
    assert "8/8" in r.stderr and "fast 8, LoRA style-kohya x0.8" in r.stderr  # the progress bar says so
    assert "fast 8: 8 steps, cfg 1, Lightning Qwen-Image-Edit-Lightning-8steps-V1.0-bf16 (sha256 " in r.stdout
    assert f"LoRA style-kohya x0.8 (sha256 {ran[1]['sha256'][:12]})" in r.stdout


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--lora", "{tmp}/nope.safetensors", "--fast", "8"], "--lora[0]: no LoRA file {tmp}/nope.safetensors"),
        (["--lora", "loras/nope.safetensors"], "--lora[0]: no LoRA file loras/nope.safetensors"),
        (["--lora", "{kohya}", "--lora", "{kohya}", "--lora", "{kohya}", "--lora", "{kohya}"], "--lora: at most 3"),
        (["--lora", "x.safetensors:9"], "--lora[0].scale: Input should be less than or equal to 4 (got 9.0)"),
        (["--lora", "{tmp}/notes.txt"], "--lora[0]: {tmp}/notes.txt is not a .safetensors file"),
        (["--lora", "{tmp}/fake.safetensors"], "--lora[0]: {tmp}/fake.safetensors is not a safetensors file"),
        (["--lora", "{misfit}"], "--lora[0]: {misfit} does not fit this model: transformer_blocks.0.attn.to_q takes"),
        (["--fast", "8", "--steps", "4"], "--fast: runs 8 steps itself; leave --steps unset (got --steps 4)"),
        (["--fast", "4", "--cfg", "3"], "--fast: runs without true CFG (cfg 1); leave --cfg unset (got --cfg 3)"),
    ],
)
def test_bad_lora_and_fast_flags_exit_2_before_the_model_loads(
    photo: Path,
    tmp_path: Path,
    tiny_path: Path,
    misfit: Path,
    loads: list[str | None],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    expected: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "loras").mkdir()
    (tmp_path / "notes.txt").write_text("not a LoRA")
    (tmp_path / "fake.safetensors").write_bytes(b"\xff" * 64)
    names = {"tmp": str(tmp_path), "kohya": str(tiny_path / "loras" / "style-kohya.safetensors"), "misfit": str(misfit)}
    args = [a.format(**names) for a in extra]
    assert main(["edit", str(photo), "-p", "x", "-o", "out.png", "--model", "tiny", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qedit edit: error: ") and expected.format(**names) in err and err.count("\n") == 1, err
    assert loads == [] and not (tmp_path / "out.png").exists()


def test_fast_without_the_lightning_file_says_where_to_put_it(
    photo: Path, tmp_path: Path, bare: Path, no_lightning: Path, loads: list[str | None], capsys
) -> None:
    out = str(tmp_path / "out.png")
    assert main(["edit", str(photo), "-p", "x", "-o", out, "--model", str(bare), "--fast", "8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qedit edit: error: --fast: needs the 8-step Lightning LoRA for Qwen-Image-Edit")
    assert "download Qwen-Image-Edit-Lightning-8steps-V1.0-bf16.safetensors" in err
    assert "https://huggingface.co/lightx2v/Qwen-Image-Lightning" in err and f"into {no_lightning}" in err
    assert str(bare / "lightning") in err  # where it looked
    assert loads == []


def test_fast_from_the_configured_lightning_folder(
    photo: Path, tmp_path: Path, bare: Path, tiny_path: Path, monkeypatch
) -> None:
    """A file in $QEDIT_LIGHTNING_DIR is found (the check passes and the model loads)."""
    monkeypatch.setenv("QEDIT_LIGHTNING_DIR", str(tiny_path / "lightning"))
    engine = DriftEngine()
    monkeypatch.setattr(edit_flags, "load_engine", lambda args: engine)
    out = tmp_path / "out.png"
    assert main(["edit", str(photo), "-p", "x", "-o", str(out), "--model", str(bare), "--fast", "4", "-q"]) == 0
    assert engine.calls[0].params.fast == 4


def test_a_snapshot_with_the_recipe_fused_in(
    photo: Path, tmp_path: Path, bare: Path, no_lightning, loads, capsys
) -> None:
    fused = tmp_path / "tiny-fused"
    shutil.copytree(bare, fused)
    index = json.loads((fused / "model_index.json").read_text())
    (fused / "model_index.json").write_text(json.dumps({**index, "_qedit_lightning_steps": 8}))
    out = str(tmp_path / "out.png")
    assert main(["edit", str(photo), "-p", "x", "-o", out, "--model", str(fused), "--fast", "4"]) == 2
    assert "--fast: " in (err := capsys.readouterr().err) and "8-step Lightning LoRA fused in" in err
    assert main(["models", "--path", str(tmp_path)]) == 0
    assert "Lightning fused in: runs 8 steps without CFG" in capsys.readouterr().out


def test_batch_and_session_take_the_flags(tmp_path: Path, tiny_path: Path, monkeypatch, capsys) -> None:
    kohya = str(tiny_path / "loras" / "style-kohya.safetensors")
    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (256, 192), "gray").save(src / "a.png")
    engine = DriftEngine()
    monkeypatch.setattr(edit_flags, "load_engine", lambda args: engine)
    flags = ["--model", "tiny", "--lora", f"{kohya}:0.5", "--fast", "4", "-q"]
    assert main(["batch", str(src), "-p", "x", "-o", str(tmp_path / "out"), *flags]) == 0
    assert "editing with fast 4, LoRA style-kohya x0.5" in capsys.readouterr().err
    assert engine.calls[-1].params.fast == 4 and engine.calls[-1].params.loras[0].scale == 0.5

    bad = ["--model", "tiny", "--lora", str(tmp_path / "nope.safetensors")]
    assert main(["batch", str(src), "-p", "x", "-o", str(tmp_path / "out2"), *bad]) == 2
    assert "--lora[0]: no LoRA file" in capsys.readouterr().err and len(engine.calls) == 1

    monkeypatch.chdir(tmp_path)
    assert main(["session", "new", "s", str(src / "a.png")]) == 0
    assert main(["session", "edit", "s", "-p", "x", *flags]) == 0
    assert "with fast 4, LoRA style-kohya x0.5" in capsys.readouterr().out
    assert engine.calls[-1].params.loras[0].path == kohya
    assert main(["session", "edit", "s", "-p", "x", *bad]) == 2
    assert "--lora[0]: no LoRA file" in capsys.readouterr().err and len(engine.calls) == 2


def test_engine_refusals_name_the_flag(photo: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """A LoRA the engine refuses after loading (a hub model: nothing to check before) names --lora[i]."""
    from qedit.errors import InvalidInput

    class Refusing(DriftEngine):
        def edit(self, request, **kw):  # type: ignore[no-untyped-def, override]
            raise InvalidInput("cannot load it", field="loras[0]")

    monkeypatch.setattr(edit_flags, "load_engine", lambda args: Refusing())
    lora = write_safetensors(
        tmp_path / "x.safetensors", {"a.lora_A.weight": f32((1, 2)), "a.lora_B.weight": f32((2, 1))}
    )
    out = str(tmp_path / "out.png")
    assert main(["edit", str(photo), "-p", "x", "-o", out, "--model", "someone/model", "--lora", str(lora), "-q"]) == 2
    assert capsys.readouterr().err == "qedit edit: error: --lora[0]: cannot load it\n"


# -- qedit lora inspect ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_inspect_each_format(fmt: str, tiny_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("QEDIT_MODEL", raising=False)  # the default model: tiny
    file = tiny_path / "loras" / f"style-{fmt}.safetensors"
    assert main(["lora", "inspect", str(file), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == fmt and report["ranks"] == [4] and report["fits"] is True and report["model"] == "tiny"
    assert report["blocks"] == [0, 1] and "attn.to_q" in report["targets"] and report["problems"] == []
    assert report["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    assert report["size_bytes"] == file.stat().st_size
    assert report["alphas"] == ([2.0] if fmt in ("kohya", "lightx2v") else [])  # the writer's rank / 2
    assert all(m["alpha"] == (2.0 if fmt in ("kohya", "lightx2v") else None) for m in report["modules"])


def test_inspect_prints_a_readable_report(tiny_path: Path, capsys) -> None:
    file = tiny_path / "lightning" / lightning.file_name(FAMILY, 8)
    assert main(["lora", "inspect", str(file), "--model", "tiny", "--no-sha256"]) == 0
    out = capsys.readouterr().out
    for line in (
        "format    lightx2v",
        "dtypes    BF16",
        "rank      8",
        "alpha     8 (modules scaled by alpha/rank = 1)",
        "blocks    0-1 (2 of 2 blocks)",
        "model     tiny",
        "fit       fits",
    ):
        assert line in out, out
    assert "sha256" not in out and "txt_mod.1" in out


def test_inspect_reads_bf16_alphas(tmp_path: Path, inner: int, capsys) -> None:
    base = "lora_unet_transformer_blocks_0_attn_to_q"
    bf16_four = b"\x80\x40"  # 4.0 in bfloat16, little-endian
    file = write_safetensors(
        tmp_path / "k.safetensors",
        {
            f"{base}.lora_down.weight": ("BF16", (8, inner), bytes(16 * inner)),
            f"{base}.lora_up.weight": ("BF16", (inner, 8), bytes(16 * inner)),
            f"{base}.alpha": ("BF16", (), bf16_four),
        },
    )
    assert main(["lora", "inspect", str(file), "--model", "tiny"]) == 0
    assert "alpha     4 (modules scaled by alpha/rank = 0.5)" in capsys.readouterr().out


def test_inspect_a_lora_that_does_not_fit_exits_1_naming_the_layers(misfit: Path, inner: int, capsys) -> None:
    assert main(["lora", "inspect", str(misfit), "--model", "tiny"]) == 1
    out = capsys.readouterr().out
    assert "fit       does not fit: 2 layer(s)" in out
    assert (
        f"transformer_blocks.0.attn.to_q takes {inner} -> {inner} features, the LoRA has {inner + 1} -> {inner}" in out
    )
    assert "the model has no layer transformer_blocks.7.attn.to_k" in out
    assert main(["lora", "inspect", str(misfit), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["fits"] is False and len(report["problems"]) == 2 and report["blocks"] == [0, 7]


def test_inspect_refuses_what_is_not_a_lora_with_exit_2(tmp_path: Path, capsys) -> None:
    (tmp_path / "weights.safetensors").write_bytes(b"PK\x03\x04 this is a zip")
    (tmp_path / "model.bin").write_bytes(b"a pickle")
    not_lora = write_safetensors(tmp_path / "model.safetensors", {"conv.weight": f32((2, 2))})
    for file, message in (
        (tmp_path / "weights.safetensors", "is not a safetensors file"),
        (tmp_path / "model.bin", "is not a .safetensors file (pickled weights are refused)"),
        (tmp_path / "missing.safetensors", "no LoRA file"),
        (not_lora, "is not a LoRA: no lora_A/lora_B or lora_down/lora_up weights (conv.weight)"),
    ):
        assert main(["lora", "inspect", str(file)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("qedit lora: error: FILE: ") and message in err and err.count("\n") == 1, err


def test_inspect_without_the_models_config_describes_and_exits_2(tiny_path: Path, tmp_path: Path, capsys) -> None:
    file = tiny_path / "loras" / "style-kohya.safetensors"
    assert main(["lora", "inspect", str(file), "--model", str(tmp_path / "nowhere"), "--no-sha256"]) == 2
    captured = capsys.readouterr()
    assert "format    kohya" in captured.out and "fit       unknown" in captured.out
    assert captured.err == (
        f"qedit lora: error: model: cannot read the transformer config of {tmp_path / 'nowhere'} "
        "(give a snapshot directory, a hub id or a spec name)\n"
    )


# -- qedit tiny-model --with-loras, qedit models ---------------------------------------------------


def test_tiny_model_with_loras_writes_them_and_a_command_to_try(tmp_path: Path, capsys) -> None:
    demo = tmp_path / "tiny-demo"
    assert main(["tiny-model", str(demo), "--with-loras"]) == 0
    out = capsys.readouterr().out
    written = [*(f"loras/style-{fmt}.safetensors" for fmt in FORMATS)]
    written += [f"lightning/{lightning.file_name(FAMILY, n)}" for n in lightning.STEPS]
    for name in written:
        assert (demo / name).is_file() and str(demo / name) in out
    assert f"--model {demo} --lora {demo / 'loras' / 'style-kohya.safetensors'}:0.8 --fast 8" in out
    assert main(["tiny-model", str(tmp_path / "plain")]) == 0
    assert not (tmp_path / "plain" / "loras").exists() and "--lora" not in capsys.readouterr().out


def test_models_lists_the_lightning_files(tiny_path: Path, no_lightning: Path, capsys) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for n in lightning.STEPS:
        assert f"--fast {n}: {tiny_path / 'lightning' / lightning.file_name(FAMILY, n)}" in out
    assert (
        "--fast 8: missing; download Qwen-Image-Edit-2509/Qwen-Image-Edit-2509-Lightning-8steps-V1.0-bf16.safetensors "
        f"from https://huggingface.co/lightx2v/Qwen-Image-Lightning into {no_lightning}"
    ) in out
    assert "https://huggingface.co/lightx2v/Qwen-Image-Edit-2511-Lightning" in out
