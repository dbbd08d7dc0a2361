"""How much memory a model needs in each memory mode, from its files' headers: torch-free.

``qedit memory`` answers "which flags make this model fit my GPU" before anything is loaded, so it
reads only the safetensors headers (8 bytes and a JSON table per file: every tensor's name, dtype
and shape), sharded snapshots included, and a GGUF file's tensor table; no weight is read and
nothing imports torch. A spec name without a snapshot on this machine is answered from the real
checkpoints' sizes (``KNOWN``), which the same code derived from their architectures.

Each quantised size follows the library that makes it, tensor by tensor: what a quantiser converts
is a linear layer's 2-D weight (not embedding tables, the text encoder's output head, norms,
biases or convolutions; never the VAE: see ``qedit.engine.memory``), and each format's overheads
are counted (torchao int8: a float32 scale and an int8 zero point per row; fp8: a float32 scale per
row; bitsandbytes nf4: 4 bits and a float32 absmax per 64 weights). Peaks per offload mode follow
the hooks: ``none`` holds all three components, ``model`` the larger of the text encoder and the
transformer plus the VAE (which diffusers' chain leaves on the GPU), ``group`` the transformer's
non-block weights and two blocks (the running one and the one prefetched on a side stream), the
text encoder two layers, the VAE whole (an upper bound: its encoder and decoder go by blocks);
``sequential`` one layer (with the weights stored as loaded: it refuses quantised ones). A block's
or layer's quantised bytes are its parameters at the component's average bytes per parameter. To
each peak an activation allowance (``ACTIVATIONS_1MP``) is added: a stated figure, not a measurement.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qedit.errors import InvalidInput, QeditError
from qedit.loras.header import TensorInfo, read_header

GiB = 1024**3
GPUS_GIB = (24, 48, 80)  # the usual card sizes, as the GiB their drivers report
ACTIVATIONS_1MP = 4 * GiB
"""Allowance for one 1 MP edit's activations with both CFG branches in one batch (~8k image tokens
through the transformer; the VAE decode at full size and the text encoder's logits are the largest),
plus the CUDA context."""

COMPONENTS = ("transformer", "text_encoder", "vae")
QUANTIZE_MODES = ("none", "int8", "fp8", "nf4", "gguf")
OFFLOAD_MODES = ("none", "model", "group", "sequential")
QUANTIZED: dict[str, tuple[str, ...]] = {
    "int8": ("transformer", "text_encoder"),
    "fp8": ("transformer", "text_encoder"),
    "nf4": ("transformer", "text_encoder"),
    "gguf": ("transformer",),  # a GGUF file holds the transformer only
}
"""Quantize mode -> the components it converts; the engine (``qedit.engine.memory``) reads it from here."""
NOT_CONVERTED = ("embed_tokens", "lm_head")  # transformers keeps the embedding table and output head as stored
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}
LOAD_DTYPES = {"bf16": 2, "fp16": 2, "fp32": 4}
WEIGHT_FILES = {
    "transformer": "diffusion_pytorch_model.safetensors",
    "vae": "diffusion_pytorch_model.safetensors",
    "text_encoder": "model.safetensors",
}
GROUP_UNIT = {"transformer": "block", "text_encoder": "leaf", "vae": "whole"}  # as qedit.engine.memory groups them
_BLOCK = re.compile(r"^([^.]+\.\d+)\.")


def unsupported(offload: str, quantize: str) -> str | None:
    """Why a combination cannot run (the engine refuses it: ``qedit.engine.memory.check``); None if it can."""
    if offload == "sequential" and quantize != "none":
        return (
            f"sequential offload cannot move {quantize} weights; use offload=group with quantize={quantize} "
            "(nearly as little GPU memory), or quantize=none"
        )
    return None


@dataclass(frozen=True)
class ComponentSize:
    """One component's weights, in parameters; bytes per mode come from ``bytes_in``."""

    name: str
    params: int
    stored_bytes: int  # as in its files
    quantizable: int  # elements of the 2-D linear weights a quantiser converts
    rows: int  # their output rows (per-row scales)
    fixed_bytes: int = 0  # non-float tensors, kept as stored
    group_resident: int = 0  # parameters on the GPU all the while it runs under group offload
    group_unit: int = 0  # parameters of its largest offload group (block, layer, or 0 when whole)
    leaf: int = 0  # parameters of its largest layer (sequential offload)
    gguf_bytes: int | None = None  # the GGUF file's transformer as loaded (in the footprint's dtype), if given

    def bytes_in(self, quantize: str, dtype_bytes: int) -> int | None:
        """Bytes on the GPU with ``quantize``; None where the mode cannot apply (gguf without a file)."""
        floats = self.params - self.quantizable
        if self.name not in QUANTIZED.get(quantize, ()):
            return self.fixed_bytes + self.params * dtype_bytes
        if quantize == "gguf":
            return self.gguf_bytes
        rest = self.fixed_bytes + floats * dtype_bytes
        if quantize == "int8":
            return rest + self.quantizable + self.rows * 5
        if quantize == "fp8":
            return rest + self.quantizable + self.rows * 4
        return rest + self.quantizable // 2 + math.ceil(self.quantizable / 64) * 4  # nf4

    def scaled(self, params: int, quantize: str, dtype_bytes: int) -> int:
        """Bytes of ``params`` of this component at its mode's average bytes per parameter."""
        total = self.bytes_in(quantize, dtype_bytes) or 0
        return round(params * total / self.params) if self.params else 0


@dataclass(frozen=True)
class Footprint:
    """A model's components and the dtype they load in on a GPU."""

    model: str
    source: str  # "headers" (a snapshot's files) or "known" (the real checkpoints' sizes)
    path: Path | None
    components: dict[str, ComponentSize]
    dtype: str = "bf16"
    gguf_file: Path | None = None
    allowance: int = ACTIVATIONS_1MP
    notes: list[str] = field(default_factory=list)

    @property
    def dtype_bytes(self) -> int:
        return LOAD_DTYPES[self.dtype]

    @property
    def quantize_modes(self) -> tuple[str, ...]:
        return tuple(m for m in QUANTIZE_MODES if m != "gguf" or self.gguf_file is not None)

    def weights(self, quantize: str) -> dict[str, int]:
        return {name: c.bytes_in(quantize, self.dtype_bytes) or 0 for name, c in self.components.items()}

    def peak(self, offload: str, quantize: str) -> int | None:
        """Peak GPU bytes of one edit: the weights the offload mode holds at once, plus the allowance;
        None for a combination the engine refuses (``unsupported``)."""
        if unsupported(offload, quantize):
            return None
        return self.weights_peak(offload, quantize) + self.allowance

    def weights_peak(self, offload: str, quantize: str) -> int:
        w = self.weights(quantize)
        if offload == "none":
            return sum(w.values())
        if offload == "model":
            return max(w.get("text_encoder", 0), w.get("transformer", 0)) + w.get("vae", 0)
        db = self.dtype_bytes
        if offload == "group":
            return max(c.scaled(c.group_resident + 2 * c.group_unit, quantize, db) for c in self.components.values())
        return max(c.scaled(c.leaf, quantize, db) for c in self.components.values())  # sequential

    def fits(self, offload: str, quantize: str) -> list[int]:
        """The card sizes (GiB) the peak fits in."""
        need = self.peak(offload, quantize)
        return [g for g in GPUS_GIB if need is not None and need <= g * GiB]

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "source": self.source,
            "path": str(self.path) if self.path else None,
            "gguf_file": str(self.gguf_file) if self.gguf_file else None,
            "dtype": self.dtype,
            "activation_allowance_bytes": self.allowance,
            "gpus_gib": list(GPUS_GIB),
            "components": {
                name: {
                    "params": c.params,
                    "stored_bytes": c.stored_bytes,
                    "bytes": {q: c.bytes_in(q, self.dtype_bytes) for q in self.quantize_modes},
                }
                for name, c in self.components.items()
            },
            "peak": {
                o: {
                    q: {"bytes": self.peak(o, q), "fits_gib": self.fits(o, q), "refused": unsupported(o, q)}
                    for q in self.quantize_modes
                }
                for o in OFFLOAD_MODES
            },
            "notes": self.notes,
        }


# -- from a snapshot's headers -----------------------------------------------------------------


def component_files(folder: Path) -> list[Path]:
    """A component's weight files: the single file, or every shard its ``.index.json`` names."""
    name = WEIGHT_FILES.get(folder.name, "model.safetensors")
    single, index = folder / name, folder / f"{name}.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise InvalidInput(f"corrupt index {index}: {type(e).__name__}: {e}", field="model") from None
        return [folder / s for s in shards]
    found = sorted(folder.glob("*.safetensors"))
    if not found:
        raise InvalidInput(f"no weights in {folder} (expected {name} or {name}.index.json)", field="model")
    return found


def component_tensors(folder: Path) -> dict[str, TensorInfo]:
    """Every tensor of a component, from its files' headers only."""
    tensors: dict[str, TensorInfo] = {}
    for file in component_files(folder):
        if not file.is_file():
            raise InvalidInput(f"missing weights file {file}", field="model")
        tensors.update(read_header(file, "model").tensors)
    return tensors


def size_of(name: str, tensors: dict[str, TensorInfo], gguf_bytes: int | None = None) -> ComponentSize:
    """A component's sizes from its tensors' names, dtypes and shapes."""
    params = stored = quantizable = rows = fixed = 0
    blocks: dict[str, int] = {}
    leaves: dict[str, int] = {}
    for tname, t in tensors.items():
        n = math.prod(t.shape)
        stored += t.nbytes
        if t.dtype not in FLOAT_DTYPES:
            fixed += t.nbytes
            continue
        params += n
        if len(t.shape) == 2 and tname.endswith(".weight") and not any(s in tname for s in NOT_CONVERTED):
            quantizable += n
            rows += t.shape[0]
        leaf = tname.rpartition(".")[0]
        leaves[leaf] = leaves.get(leaf, 0) + n
        block = _BLOCK.match(tname)
        if block:
            blocks[block.group(1)] = blocks.get(block.group(1), 0) + n
    unit = GROUP_UNIT.get(name, "whole")
    largest_leaf = max(leaves.values(), default=0)
    if unit == "block":
        resident, group = params - sum(blocks.values()), max(blocks.values(), default=0)
    elif unit == "leaf":
        resident, group = 0, largest_leaf
    else:
        resident, group = params, 0
    if name == "vae":
        quantizable = rows = 0
    return ComponentSize(
        name=name,
        params=params,
        stored_bytes=stored,
        quantizable=quantizable,
        rows=rows,
        fixed_bytes=fixed,
        group_resident=resident,
        group_unit=group,
        leaf=largest_leaf,
        gguf_bytes=gguf_bytes if name == "transformer" else None,
    )


def gguf_bytes(file: Path, dtype_bytes: int) -> int:
    """The transformer's bytes as diffusers loads a GGUF file: quantised tensors as packed, F32/F16
    tensors cast to the load dtype. Reads the file's tensor table only (memory-mapped)."""
    if not file.is_file():
        raise InvalidInput(f"no such GGUF file: {file}", field="gguf_file")
    try:
        from gguf import GGMLQuantizationType, GGUFReader

        reader = GGUFReader(str(file))
        plain = (GGMLQuantizationType.F32, GGMLQuantizationType.F16)
        return sum(
            int(t.n_elements) * dtype_bytes if t.tensor_type in plain else int(t.n_bytes) for t in reader.tensors
        )
    except QeditError:
        raise
    except Exception as e:
        raise InvalidInput(f"{file} is not a readable GGUF file: {type(e).__name__}: {e}", field="gguf_file") from None


def from_snapshot(
    path: Path, model: str | None = None, dtype: str = "bf16", gguf_file: Path | None = None
) -> Footprint:
    """A snapshot directory's footprint, from its headers."""
    if not (path / "model_index.json").is_file():
        raise InvalidInput(f"{path} is not a model snapshot (no model_index.json)", field="model")
    packed = gguf_bytes(gguf_file, LOAD_DTYPES[dtype]) if gguf_file is not None else None
    components = {name: size_of(name, component_tensors(path / name), packed) for name in COMPONENTS}
    return Footprint(
        model=model or str(path), source="headers", path=path, components=components, dtype=dtype, gguf_file=gguf_file
    )


# -- from the real checkpoints' known sizes ---------------------------------------------------------

KNOWN: dict[str, ComponentSize] = {
    # The three components every member of the family (Qwen-Image-Edit, -2509, -2511) ships, in bf16.
    # ``size_of`` applied to the tensors of diffusers' / transformers' classes built (on the meta
    # device) from the checkpoints' configs: transformer 60 layers x 24 heads x 128, joint dim 3584;
    # text encoder Qwen2.5-VL-7B-Instruct (28 layers, hidden 3584, vocabulary 152064, untied head;
    # vision tower 32 blocks x 1280); VAE base_dim 96. The totals agree with the published figures
    # (transformer 20.43B = the 40.86 GB of its bf16 shards; Qwen2.5-VL-7B 8.29B with a 676.55M vision
    # tower; VAE 0.127B = its 254 MB file); tests/models/test_footprint.py rebuilds them.
    "transformer": ComponentSize(
        name="transformer",
        params=20_430_401_088,
        stored_bytes=40_860_802_176,
        quantizable=20_424_818_688,
        rows=5_548_096,
        group_resident=40_523_328,
        group_unit=339_831_296,
        leaf=56_641_536,
    ),
    "text_encoder": ComponentSize(
        name="text_encoder",
        params=8_292_166_656,
        stored_bytes=16_584_333_312,
        quantizable=7_199_817_728,
        rows=1_822_976,
        group_resident=0,
        group_unit=544_997_376,
        leaf=544_997_376,
    ),
    "vae": ComponentSize(
        name="vae",
        params=126_892_531,
        stored_bytes=253_785_062,
        quantizable=0,
        rows=0,
        group_resident=126_892_531,
        group_unit=0,
        leaf=3_981_696,
    ),
}


def from_spec(name: str, dtype: str = "bf16", gguf_file: Path | None = None) -> Footprint:
    """A real spec's footprint without its weights: ``KNOWN``, with a GGUF file's own sizes if given."""
    components = dict(KNOWN)
    if gguf_file is not None:
        packed = gguf_bytes(gguf_file, LOAD_DTYPES[dtype])
        t = components["transformer"]
        components["transformer"] = dataclasses.replace(t, gguf_bytes=packed)
    return Footprint(
        model=name,
        source="known",
        path=None,
        components=components,
        dtype=dtype,
        gguf_file=gguf_file,
        notes=["no weights on this machine: sizes of the real checkpoints (bf16), not read from files"],
    )
