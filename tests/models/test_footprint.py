"""Model footprints from headers alone: exact for a snapshot (single-file and sharded), the real
family's known sizes rebuilt from its architecture, the modes ordered as their libraries make them,
and broken files refused naming the file; without importing torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qedit.errors import InvalidInput
from qedit.models import footprint
from qedit.models.footprint import COMPONENTS, KNOWN, GiB

BYTES = {"F32": 4, "F16": 2, "BF16": 2}


def safetensors_sizes(folder: Path) -> tuple[int, int]:
    """(parameters, bytes) of a component, counted with safetensors' own reader."""
    from safetensors import safe_open

    params = nbytes = 0
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="np") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                s = f.get_slice(key)
                n = 1
                for d in s.get_shape():
                    n *= d
                params += n
                nbytes += n * BYTES[s.get_dtype()]
    return params, nbytes


@pytest.fixture()
def snap(tiny_path: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "snap"
    shutil.copytree(tiny_path, copy, ignore=shutil.ignore_patterns("loras", "lightning"))
    return copy


def test_snapshot_sizes_are_the_headers_sums(tiny_path: Path) -> None:
    fp = footprint.from_snapshot(tiny_path, dtype="fp32")
    assert fp.source == "headers"
    for name in COMPONENTS:
        params, nbytes = safetensors_sizes(tiny_path / name)
        c = fp.components[name]
        assert (c.params, c.stored_bytes) == (params, nbytes), name
        assert c.bytes_in("none", 4) == nbytes  # the tiny preset is stored in fp32
        assert c.bytes_in("none", 2) == nbytes // 2
    assert fp.peak("none", "none") == sum(safetensors_sizes(tiny_path / n)[1] for n in COMPONENTS) + fp.allowance


def test_sharded_snapshot_reads_every_shard(snap: Path) -> None:
    from safetensors.torch import load_file, save_file

    single = footprint.from_snapshot(snap).components["transformer"]
    folder = snap / "transformer"
    state = load_file(folder / "diffusion_pytorch_model.safetensors")
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    names = sorted(state)
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": names[::2]}
    shards["diffusion_pytorch_model-00002-of-00002.safetensors"] = names[1::2]
    weight_map = {}
    for file, keys in shards.items():
        save_file({k: state[k] for k in keys}, folder / file)
        weight_map.update(dict.fromkeys(keys, file))
    index = {"metadata": {"total_size": single.stored_bytes}, "weight_map": weight_map}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    assert footprint.from_snapshot(snap).components["transformer"] == single
    (folder / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    with pytest.raises(InvalidInput, match=r"missing weights file .*00002-of-00002\.safetensors"):
        footprint.from_snapshot(snap)


def test_a_truncated_file_is_named(snap: Path) -> None:
    file = snap / "vae" / "diffusion_pytorch_model.safetensors"
    file.write_bytes(file.read_bytes()[:1000])
    with pytest.raises(InvalidInput, match=r"vae/diffusion_pytorch_model\.safetensors is truncated") as e:
        footprint.from_snapshot(snap)
    assert e.value.field == "model"


def test_known_sizes_are_the_real_architectures() -> None:
    """KNOWN, rebuilt: the checkpoints' configs through diffusers' and transformers' classes on the meta device."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from qedit.loras.header import TensorInfo

    text = {
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
        "tie_word_embeddings": False,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    }
    vision = {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "out_hidden_size": 3584,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
    }
    with init_empty_weights():
        models = {
            "transformer": QwenImageTransformer2DModel(
                attention_head_dim=128,
                axes_dims_rope=(16, 56, 56),
                in_channels=64,
                joint_attention_dim=3584,
                num_attention_heads=24,
                num_layers=60,
                out_channels=16,
                patch_size=2,
            ),
            "text_encoder": Qwen2_5_VLForConditionalGeneration(
                Qwen2_5_VLConfig(text_config=text, vision_config=vision, vocab_size=152064, tie_word_embeddings=False)
            ),
            "vae": AutoencoderKLQwenImage(
                base_dim=96,
                z_dim=16,
                dim_mult=[1, 2, 4, 4],
                num_res_blocks=2,
                attn_scales=[],
                temperal_downsample=[False, True, True],
            ),
        }
    for name, model in models.items():
        tensors = {k: TensorInfo("BF16", tuple(v.shape)) for k, v in model.state_dict().items()}
        assert footprint.size_of(name, tensors) == KNOWN[name], name
        assert all(v.dtype == torch.float32 for v in model.state_dict().values())  # every tensor a float
    # the published totals: 20.43B, 8.29B (676.55M of it the vision tower), 0.127B parameters
    assert round(KNOWN["transformer"].params / 1e9, 2) == 20.43
    assert round(KNOWN["text_encoder"].params / 1e9, 2) == 8.29
    assert round(KNOWN["vae"].params / 1e9, 3) == 0.127


def test_modes_order_as_their_formats_and_hooks_make_them() -> None:
    fp = footprint.from_spec("qwen-image-edit-2509")
    weights = {q: sum(fp.weights(q).values()) for q in ("none", "int8", "fp8", "nf4")}
    assert weights["none"] > weights["int8"] > weights["nf4"]
    assert abs(fp.weights("int8")["transformer"] / fp.weights("none")["transformer"] - 0.5) < 0.01
    assert fp.weights("nf4")["vae"] == fp.weights("none")["vae"]  # never quantised
    peaks = [fp.peak(o, "none") for o in ("none", "model", "group", "sequential")]
    assert peaks == sorted(peaks, reverse=True)
    for q in ("int8", "nf4"):
        peaks = [fp.peak(o, q) for o in ("none", "model", "group")]
        assert peaks == sorted(peaks, reverse=True), q
        assert fp.peak("sequential", q) is None and fp.fits("sequential", q) == []  # the engine refuses it
    # the facts a user picks flags by: bf16 whole needs an 80 GB card; a 24 GB card takes model offload + nf4
    assert fp.fits("none", "none") == [80]
    assert fp.fits("model", "none") == [48, 80]
    assert 24 in fp.fits("model", "nf4")
    assert fp.peak("model", "none") == fp.weights("none")["transformer"] + fp.weights("none")["vae"] + fp.allowance
    assert fp.peak("none", "none") / GiB == pytest.approx(53.74 + 4, abs=0.01)


def test_gguf_sizes_come_from_the_file(tiny_path: Path, tmp_path: Path) -> None:
    from tests.support.gguf import write_gguf

    file = write_gguf(tiny_path, tmp_path / "t.gguf")
    import gguf

    packed = sum(int(t.n_bytes) for t in gguf.GGUFReader(str(file)).tensors)  # all written F32 or Q8_0
    fp = footprint.from_snapshot(tiny_path, dtype="fp32", gguf_file=file)
    assert fp.components["transformer"].bytes_in("gguf", 4) == packed
    assert fp.components["text_encoder"].bytes_in("gguf", 4) == fp.components["text_encoder"].stored_bytes
    assert "gguf" in fp.quantize_modes and "gguf" not in footprint.from_snapshot(tiny_path).quantize_modes
    spec = footprint.from_spec("qwen-image-edit", dtype="fp32", gguf_file=file)  # a spec name with a GGUF: the file's
    assert spec.components["transformer"].bytes_in("gguf", 4) == packed
    (tmp_path / "bad.gguf").write_bytes(b"GGUF not really")
    with pytest.raises(InvalidInput, match=r"bad\.gguf is not a readable GGUF file") as e:
        footprint.from_snapshot(tiny_path, gguf_file=tmp_path / "bad.gguf")
    assert e.value.field == "gguf_file"


def test_footprint_imports_no_torch(tiny_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from qedit.models import footprint; "
        f"footprint.from_snapshot(Path({str(tiny_path)!r})); footprint.from_spec('qwen-image-edit'); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
