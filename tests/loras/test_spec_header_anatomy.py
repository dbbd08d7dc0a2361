"""Reading LoRA files without tensors: ``FILE[:SCALE]``, safetensors headers, the key formats, fit."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from qedit.engine.tiny_loras import random_lora, save_lora
from qedit.errors import InvalidInput
from qedit.loras.anatomy import FORMATS, analyse, fit_problems, transformer_shapes
from qedit.loras.header import header_from_chunks, read_header
from qedit.loras.spec import LoraSpec

REAL_CONFIG = {  # Qwen-Image(-Edit)'s transformer/config.json
    "attention_head_dim": 128,
    "axes_dims_rope": [16, 56, 56],
    "guidance_embeds": False,
    "in_channels": 64,
    "joint_attention_dim": 3584,
    "num_attention_heads": 24,
    "num_layers": 60,
    "out_channels": 16,
    "patch_size": 2,
}


@pytest.mark.parametrize(
    ("text", "path", "scale"),
    [
        ("style.safetensors", "style.safetensors", 1.0),
        ("style.safetensors:0.8", "style.safetensors", 0.8),
        ("dir/style.safetensors:-1.5", "dir/style.safetensors", -1.5),
        ("https://host.example:8443/a.safetensors", "https://host.example:8443/a.safetensors", 1.0),
        ("https://host.example/a.safetensors:2", "https://host.example/a.safetensors", 2.0),
        ("owner/repo", "owner/repo", 1.0),
    ],
)
def test_lora_flag_parses_source_and_scale(text: str, path: str, scale: float) -> None:
    spec = LoraSpec.parse(text)
    assert (spec.path, spec.scale) == (path, scale)


@pytest.mark.parametrize(("text", "words"), [("a.safetensors:9", "less than or equal to 4"), ("", "empty")])
def test_lora_flag_refuses_bad_values(text: str, words: str) -> None:
    with pytest.raises(InvalidInput, match=words) as e:
        LoraSpec.parse(text, field="--lora")
    assert e.value.field.startswith("--lora")


@pytest.mark.parametrize("config", [REAL_CONFIG, None], ids=["real", "tiny"])
def test_shape_table_is_the_transformers_own(config: dict | None, tiny_path: Path) -> None:
    """Every adaptable layer of diffusers' QwenImageTransformer2DModel, with its features, and no more."""
    from diffusers import QwenImageTransformer2DModel

    config = config or json.loads((tiny_path / "transformer" / "config.json").read_text())
    with torch.device("meta"):
        model = QwenImageTransformer2DModel.from_config(config)
    table = transformer_shapes(config)
    for name, (n_in, n_out) in table.items():
        layer = model.get_submodule(name)
        assert isinstance(layer, torch.nn.Linear) and (layer.in_features, layer.out_features) == (n_in, n_out), name
    linears = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert linears == set(table)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_reads_as_the_same_modules(fmt: str, tiny_path: Path, tmp_path: Path) -> None:
    config = json.loads((tiny_path / "transformer" / "config.json").read_text())
    file = save_lora(random_lora(config, fmt, seed=0, rank=4), tmp_path / "l.safetensors")
    anatomy = analyse(read_header(file, "lora"), str(file), "lora")
    assert anatomy.format == fmt
    assert anatomy.ranks == (4,) and anatomy.blocks == (0, 1)
    assert "attn.to_q" in anatomy.targets and "img_mlp.net.2" in anatomy.targets
    assert all(m.has_alpha == (fmt in ("kohya", "lightx2v")) for m in anatomy.modules.values())
    assert anatomy.size_bytes == file.stat().st_size
    assert fit_problems(anatomy, config) == []
    wider = {**config, "num_attention_heads": 4}
    assert any("attn.to_q takes 128 -> 128 features, the LoRA has 64 -> 64" in p for p in fit_problems(anatomy, wider))
    assert "the model has no layer transformer_blocks.1.attn.to_q" in fit_problems(anatomy, {**config, "num_layers": 1})


def test_files_that_are_not_loras_are_named(tmp_path: Path) -> None:
    weights = save_lora({"transformer_blocks.0.attn.to_q.weight": torch.zeros(4, 4)}, tmp_path / "w.safetensors")
    with pytest.raises(InvalidInput, match=r"w\.safetensors is not a LoRA") as e:
        analyse(read_header(weights, "loras[0]"), str(weights), "loras[0]")
    assert e.value.field == "loras[0]"
    half = save_lora({"transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(4, 4)}, tmp_path / "h.safetensors")
    with pytest.raises(InvalidInput, match="no up"):
        analyse(read_header(half, "f"), str(half), "f")


def test_headers_of_broken_files_are_errors_naming_the_file(tmp_path: Path) -> None:
    good = save_lora({"a.lora_A.weight": torch.zeros(2, 8), "a.lora_B.weight": torch.zeros(8, 2)}, tmp_path / "g.st")
    data = good.read_bytes()
    cases = {
        "short": data[:5],
        "huge header length": struct.pack("<Q", 1 << 40) + data[8:],
        "not json": struct.pack("<Q", 4) + b"\xff\xfe{}",
        "cut in the header": data[:20],
        "cut in the tensors": data[:-3],
    }
    for name, content in cases.items():
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(content)
        with pytest.raises(InvalidInput) as e:
            read_header(bad, "loras[0]")
        assert str(bad) in str(e.value) and e.value.field == "loras[0]", name


def test_a_stream_is_read_only_as_far_as_its_header(tmp_path: Path) -> None:
    file = save_lora({"a.lora_A.weight": torch.zeros(2, 8), "a.lora_B.weight": torch.zeros(8, 2)}, tmp_path / "g.st")
    data = file.read_bytes() + b"\0" * 10_000_000  # as if the tensors were large
    taken = []

    def chunks():
        for i in range(0, len(data), 64):
            taken.append(i)
            yield data[i : i + 64]

    header = header_from_chunks(chunks(), "url", "loras[0]")
    assert set(header.tensors) == {"a.lora_A.weight", "a.lora_B.weight"}
    assert len(taken) * 64 < 1000
