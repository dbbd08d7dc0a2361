"""Loading: variant detection from the snapshot's own files, and errors that name the file."""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import re
import shutil
from pathlib import Path

import pytest

from qedit.engine import loader
from qedit.engine.tiny import write_tiny_snapshot
from qedit.errors import ModelLoadError
from qedit.models.snapshot import detect_spec


@pytest.fixture()
def snap(tiny_path: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "snap"
    shutil.copytree(tiny_path, copy)
    return copy


def _edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            data.pop(k, None)
        else:
            data[k] = v
    path.write_text(json.dumps(data))


def test_tiny_snapshot_has_the_diffusers_layout(tiny_path: Path) -> None:
    for folder in ("transformer", "vae", "text_encoder", "tokenizer", "processor", "scheduler"):
        assert (tiny_path / folder).is_dir(), folder
    index = json.loads((tiny_path / "model_index.json").read_text())
    assert index["_class_name"] == "QwenImageEditPipeline"
    assert index["text_encoder"] == ["transformers", "Qwen2_5_VLForConditionalGeneration"]


def test_tiny_snapshot_is_deterministic(tmp_path: Path, tiny_path: Path) -> None:
    again = write_tiny_snapshot(tmp_path / "again", "edit", with_loras=True)  # its LoRAs too
    for f in sorted(tiny_path.rglob("*.safetensors")):
        other = again / f.relative_to(tiny_path)
        assert hashlib.sha256(f.read_bytes()).digest() == hashlib.sha256(other.read_bytes()).digest(), f


def test_tokenizer_carries_the_real_special_tokens(tiny_engine) -> None:
    tok = tiny_engine.components.processor.tokenizer
    ids = tok("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>", add_special_tokens=False).input_ids
    assert ids[0] == 151644 and ids[-3:] == [151652, 151655, 151653]
    assert tok.decode(tok("开业大吉 OK", add_special_tokens=False).input_ids) == "开业大吉 OK"


@pytest.mark.parametrize(
    ("cls", "zero_cond_t", "expected"),
    [
        ("QwenImageEditPipeline", False, "qwen-image-edit"),
        ("QwenImageEditPlusPipeline", False, "qwen-image-edit-2509"),
        ("QwenImageEditPlusPipeline", True, "qwen-image-edit-2511"),
    ],
)
def test_variant_detected_from_model_index(snap: Path, cls: str, zero_cond_t: bool, expected: str) -> None:
    _edit_json(snap / "model_index.json", _qedit_spec=None, _class_name=cls)
    _edit_json(snap / "transformer" / "config.json", zero_cond_t=zero_cond_t)
    assert detect_spec(snap).name == expected


def test_foreign_pipeline_is_refused(snap: Path) -> None:
    _edit_json(snap / "model_index.json", _qedit_spec=None, _class_name="FluxPipeline")
    with pytest.raises(ModelLoadError, match=r"FluxPipeline.*is not a Qwen-Image-Edit pipeline"):
        loader.load(str(snap))


def test_missing_file_is_named(snap: Path) -> None:
    (snap / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"missing file .*vae/diffusion_pytorch_model\.safetensors"):
        loader.load(str(snap))


def test_corrupt_json_is_named(snap: Path) -> None:
    (snap / "scheduler" / "scheduler_config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"corrupt file .*scheduler/scheduler_config\.json"):
        loader.load(str(snap))


def test_truncated_weights_are_named(snap: Path) -> None:
    weights = snap / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match=r"corrupt weights file .*transformer/diffusion_pytorch_model"):
        loader.load(str(snap))


def test_locate_gives_the_snapshot_directory_and_the_model_id(tiny_path: Path) -> None:
    assert loader.locate("tiny") == (tiny_path, "tiny")  # the preset, written once per cache
    assert loader.locate(str(tiny_path)) == (tiny_path, str(tiny_path))


def test_the_tiny_preset_imports_nothing_from_the_loader() -> None:
    """The loader builds the preset, so the preset must not reach back: they share ``engine.hf``."""
    from qedit.engine import tiny

    imported = set()
    for node in ast.walk(ast.parse(inspect.getsource(tiny))):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported |= {f"{node.module}.{a.name}" for a in node.names}
    assert "qedit.engine.hf.quiet_libraries" in imported
    assert not [name for name in imported if name.startswith("qedit.engine.loader")]


def test_missing_model_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no such model directory: .*nowhere"):
        loader.load(str(tmp_path / "nowhere"))


def test_device_and_dtype_defaults() -> None:
    import torch

    assert loader.pick_dtype("cpu") == torch.float32
    assert loader.pick_dtype("cuda") == torch.bfloat16
    assert loader.pick_dtype("cpu", "bf16") == torch.bfloat16
    with pytest.raises(ModelLoadError, match="unknown dtype 'fp8'"):
        loader.pick_dtype("cpu", "fp8")


@pytest.mark.parametrize(
    ("file", "change", "expected"),
    [
        ("scheduler/scheduler_config.json", {"base_shift": "abc"}, r"base_shift is 'abc', expected float"),
        ("scheduler/scheduler_config.json", {"use_dynamic_shifting": "yes"}, r"use_dynamic_shifting is 'yes'"),
        ("scheduler/scheduler_config.json", {"time_shift_type": "cubic"}, r"time_shift_type is 'cubic', expected"),
        ("scheduler/scheduler_config.json", {"max_image_seq_len": 256}, r"unusable scheduler config: ZeroDivision"),
        ("model_index.json", {"_qedit_spec": "tiny-xl"}, r"_qedit_spec 'tiny-xl' is not a known spec"),
        ("transformer/config.json", {"num_layers": "two"}, r"cannot load transformer from .*transformer \("),
    ],
)
def test_a_bad_config_value_is_one_line_naming_the_file(
    snap: Path, file: str, change: dict[str, object], expected: str
) -> None:
    """Values that parse as JSON but cannot work: refused at load, before the first edit, naming the file."""
    _edit_json(snap / file, **change)
    with pytest.raises(ModelLoadError) as caught:
        loader.load(str(snap))
    message = str(caught.value)
    assert str(snap / file.split("/")[0]) in message and "\n" not in message
    assert re.search(expected, message), message


def test_a_snapshot_has_one_id_however_it_is_named(snap: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The id recorded in every output's metadata: the resolved path, not the path as typed."""
    monkeypatch.chdir(snap.parent)
    (snap.parent / "link").symlink_to(snap, target_is_directory=True)
    names = ("snap", "./snap", "snap/", "./snap//", str(snap), f"{snap}/", "link", "../" + snap.parent.name + "/snap")
    located = {loader.locate(name) for name in names}
    assert located == {(snap.resolve(), str(snap.resolve()))}
