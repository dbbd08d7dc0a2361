"""``EngineOptions``' memory modes turned into the ecosystem's calls; nothing here reimplements one.

Quantisation happens while the weights load, through the loaders' own ``quantization_config``:
diffusers' ``TorchAoConfig``/``BitsAndBytesConfig`` for the transformer, transformers' for the text
encoder, diffusers' ``GGUFQuantizationConfig`` with ``from_single_file`` for a GGUF transformer
(Qwen-Image's transformer is in diffusers' single-file mapping with an identity key map: ComfyUI and
diffusers name its tensors alike). Quantising on load means a weight exists in full precision only
until its layer is converted, and every library's own checks and kernels apply. diffusers'
``TorchAoConfig`` works with torchao 0.18 and torch 2.14 (only a warning that integer modes prefer
bf16, which fp32 on a CPU runs without), so torchao's ``quantize_`` is never called by hand.

What is quantised: the transformer (20.4B parameters) and the text encoder (8.3B) for int8, fp8 and
nf4. On a 24 GB card the text encoder in bf16 (16.6 GB) is, next to a 4-bit transformer, the
largest thing on the GPU, so quantising only the transformer would not make the model fit; an LLM
loses less to weight-only int8/nf4 than a diffusion transformer does. The text encoder's embedding
table and output head stay as stored (transformers never converts them). The VAE (0.13B) is never
quantised: it is small and its decoder writes the pixels. A GGUF file holds the transformer only,
so with ``gguf`` the text encoder stays as stored; combine it with ``--offload model`` on small cards.

Offload replaces ``module.to(device)`` and follows diffusers' pipelines: ``model`` chains accelerate's
``cpu_offload_with_hook`` text_encoder -> transformer -> vae (as ``enable_model_cpu_offload``: the
text encoder leaves the GPU when the transformer starts), ``group`` is diffusers'
``apply_group_offloading`` (the transformer block by block, the text encoder layer by layer, the
next group loading on a CUDA side stream while one computes), ``sequential`` is accelerate's
``cpu_offload`` (as ``enable_sequential_cpu_offload``). The onload device is a parameter, so the
mechanics run on a CPU in tests; ``EngineOptions.check_device`` refuses these modes on a CPU for
users, since there is nothing to save there, and ``check`` refuses sequential offload of quantised
weights, which accelerate cannot move.

Offload hooks hold references to the weights they move, so changing the layers under them (a LoRA
injected by peft) needs the hooks lifted and put back: diffusers does that only when handed a
pipeline object, which qedit does not have. ``place`` therefore wraps the transformer's two
adapter-changing methods in ``hooks_lifted`` (without it, a LoRA loaded under ``sequential`` lands
on the meta device and the output is garbage).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qedit.errors import InvalidInput
from qedit.models.footprint import QUANTIZED, component_tensors, unsupported
from qedit.models.options import EngineOptions

log = logging.getLogger(__name__)

QUANTIZED_COMPONENTS = QUANTIZED  # quantize mode -> the components it converts (never the VAE: see above)

OFFLOAD_ORDER = ("text_encoder", "transformer", "vae")  # diffusers' QwenImage model_cpu_offload_seq
COMFY_PREFIX = "model.diffusion_model."  # what some GGUF converters put before every tensor name
_LIFTED_METHODS = ("load_lora_adapter", "delete_adapters")
VAE_BLOCK_MODULES = ("quant_conv", "post_quant_conv", "encoder", "decoder")
"""The block map diffusers gives ``AutoencoderKLWan``, whose architecture the Qwen-Image VAE shares and
which diffusers 0.42 gives the Qwen-Image VAE none of: its ``encode``/``decode`` never call the VAE's
own ``forward``, so a group hook left on the VAE as a whole would never bring its weights over."""


def check(options: EngineOptions) -> None:
    """A missing GGUF file, and combinations the libraries cannot run, refused before a weight is read.

    accelerate's sequential offload moves each weight with ``tensor.to(dtype)``-style copies that
    torchao's int8/fp8 tensors, GGUF's packed parameters and bitsandbytes' 4-bit ones do not
    implement (it fails at the first layer); group offload moves whole quantised tensors and keeps
    nearly as little on the GPU.
    """
    if options.quantize == "gguf" and not Path(options.gguf_file or "").is_file():
        raise InvalidInput(f"no such GGUF file: {options.gguf_file}", field="gguf_file")
    reason = unsupported(options.offload, options.quantize)
    if reason:
        raise InvalidInput(reason, field="offload")


# -- quantisation ---------------------------------------------------------------------------------


def require_bitsandbytes() -> None:
    """nf4's library is an optional extra; missing, it is one line naming the option."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise InvalidInput(
            "nf4 needs bitsandbytes, which is not installed (pip install 'qedit[cuda]'), or choose int8/fp8",
            field="quantize",
        )


def _torchao_type(mode: str) -> Any:
    from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig

    return Int8WeightOnlyConfig() if mode == "int8" else Float8WeightOnlyConfig()


def transformer_quantization(options: EngineOptions, dtype: Any) -> Any | None:
    """diffusers' quantization config for the transformer's ``from_pretrained``; None: as stored (or GGUF)."""
    mode = options.quantize
    if mode in ("int8", "fp8"):
        from diffusers import TorchAoConfig

        return TorchAoConfig(_torchao_type(mode))
    if mode == "nf4":
        require_bitsandbytes()
        from diffusers import BitsAndBytesConfig

        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    return None


def text_encoder_quantization(options: EngineOptions, dtype: Any) -> Any | None:
    """transformers' quantization config for the text encoder; None where the mode leaves it as stored."""
    mode = options.quantize
    if "text_encoder" not in QUANTIZED_COMPONENTS.get(mode, ()):
        return None
    if mode == "nf4":
        require_bitsandbytes()
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    from transformers import TorchAoConfig

    return TorchAoConfig(_torchao_type(mode))


def load_transformer(snapshot: Path, options: EngineOptions, dtype: Any, device: str) -> Any:
    """The snapshot's transformer, quantised as ``options`` say; with ``gguf`` its weights come from the file."""
    from diffusers import QwenImageTransformer2DModel

    if options.quantize == "gguf":
        return _load_gguf_transformer(snapshot, Path(options.gguf_file or ""), dtype)
    extra = _quantized_loading(transformer_quantization(options, dtype), options, device)
    return QwenImageTransformer2DModel.from_pretrained(snapshot / "transformer", dtype=dtype, **extra)


def load_text_encoder(snapshot: Path, options: EngineOptions, dtype: Any, device: str) -> Any:
    """The snapshot's text encoder, quantised as ``options`` say (``QUANTIZED_COMPONENTS``)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    extra = _quantized_loading(text_encoder_quantization(options, dtype), options, device)
    return Qwen2_5_VLForConditionalGeneration.from_pretrained(snapshot / "text_encoder", dtype=dtype, **extra)


def _quantized_loading(config: Any | None, options: EngineOptions, device: str) -> dict[str, Any]:
    """``from_pretrained``'s extra arguments. bitsandbytes quantises as a weight reaches the GPU, and
    both libraries would pick the *current* CUDA device for it: the engine's own is named instead.
    torchao quantises on the host while loading; ``place`` then moves the result."""
    if config is None:
        return {}
    extra: dict[str, Any] = {"quantization_config": config}
    if options.quantize == "nf4":
        extra["device_map"] = {"": device}
    return extra


def _load_gguf_transformer(snapshot: Path, file: Path, dtype: Any) -> Any:
    """diffusers' GGUF loader and single-file path, with the snapshot's ``transformer/config.json``.

    The file is read with diffusers' own ``load_gguf_checkpoint`` so that a converter's
    ``model.diffusion_model.`` prefix can be dropped and the names checked against the snapshot's
    transformer before a model is built: a GGUF of another model fails naming a tensor it lacks.
    """
    from diffusers import GGUFQuantizationConfig, QwenImageTransformer2DModel
    from diffusers.models.model_loading_utils import load_gguf_checkpoint

    try:
        state = load_gguf_checkpoint(str(file))
    except Exception as e:
        raise InvalidInput(f"{file} cannot be read as GGUF: {type(e).__name__}: {e}", field="gguf_file") from None
    state = {k.removeprefix(COMFY_PREFIX): v for k, v in state.items()}
    expected = set(component_tensors(snapshot / "transformer"))
    missing = sorted(expected - set(state))
    if missing:
        raise InvalidInput(
            f"{file} is not this snapshot's transformer: it lacks {missing[0]} (and {len(missing) - 1} more "
            f"of {len(expected)} tensors)",
            field="gguf_file",
        )
    return QwenImageTransformer2DModel.from_single_file(
        state,
        config=str(snapshot),
        subfolder="transformer",
        quantization_config=GGUFQuantizationConfig(compute_dtype=dtype),
        dtype=dtype,
    )


def weight_bytes(module: Any) -> int:
    """Bytes a module's parameters and buffers occupy, counting a quantised tensor by its parts.

    torchao's tensors report the original dtype's ``element_size``; their real storage is the inner
    tensors ``__tensor_flatten__`` names (int8 data, scales, zero points). GGUF parameters are their
    packed bytes; bitsandbytes' 4-bit ones too (their absmax, held apart, is left out). Shared tensors
    (tied embeddings) count once.
    """
    seen: set[int] = set()
    total = 0
    for tensor in (*module.parameters(), *module.buffers()):
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        total += _tensor_bytes(tensor.data if hasattr(tensor, "data") else tensor)
    return total


def _tensor_bytes(tensor: Any) -> int:
    flatten = getattr(tensor, "__tensor_flatten__", None)
    if flatten is not None and type(tensor).__name__ != "GGUFParameter":
        names, _ = flatten()
        return sum(_tensor_bytes(getattr(tensor, n)) for n in names if getattr(tensor, n, None) is not None)
    return tensor.numel() * tensor.element_size()


# -- offload ----------------------------------------------------------------------------------------


def place(modules: dict[str, Any], offload: str, device: Any) -> None:
    """Put ``modules`` (text_encoder, transformer, vae) where ``offload`` says, computing on ``device``.

    ``none`` moves them there; the other modes keep the weights on the CPU and install the hooks
    that bring them to ``device`` when they run.
    """
    import torch

    device = torch.device(device)
    ordered = [(name, modules[name]) for name in OFFLOAD_ORDER if name in modules]
    if offload != "none":
        log.info("offload=%s: weights kept on the CPU, brought to %s as they run", offload, device)
    if offload == "none":
        for _, module in ordered:
            module.to(device)
    elif offload == "model":
        _model_offload(ordered, device)
    elif offload == "group":
        for name, module in ordered:
            _group_offload(name, module, device)
    elif offload == "sequential":
        from accelerate import cpu_offload

        for _, module in ordered:
            cpu_offload(module, device, offload_buffers=len(module._parameters) > 0)
    else:
        raise InvalidInput(f"unknown offload mode {offload!r}", field="offload")
    if offload in ("group", "sequential") and "transformer" in modules:
        _lift_for_adapters(modules["transformer"], offload, device)


def _model_offload(ordered: list[tuple[str, Any]], device: Any) -> None:
    """accelerate's chained hooks: each module comes to ``device`` when it runs and sends the previous one back."""
    from accelerate import cpu_offload_with_hook

    hook = None
    for _, module in ordered:
        _, hook = cpu_offload_with_hook(module, device, prev_module_hook=hook)


def _group_offload(name: str, module: Any, device: Any) -> None:
    """diffusers' group offloading, one group at a time; on CUDA the next group loads on a side stream.

    The transformer and the VAE go by blocks: the transformer's 60 ``transformer_blocks``; the VAE's
    encoder and decoder by their block lists (``VAE_BLOCK_MODULES``). The text encoder, a transformers model
    diffusers has no block map for, goes leaf by leaf: its blocks sit two levels down, and its parent
    calls ``embed_tokens`` directly, so block groups would leave that table off the GPU when used;
    a leaf's hook sits on the layer itself.
    """
    import torch
    from diffusers.hooks import apply_group_offloading

    stream = device.type == "cuda"
    leaf = name == "text_encoder"
    blocks = None
    if name == "vae" and getattr(module, "_group_offload_block_modules", None) is None:
        blocks = list(VAE_BLOCK_MODULES)
    apply_group_offloading(
        module,
        onload_device=device,
        offload_device=torch.device("cpu"),
        offload_type="leaf_level" if leaf else "block_level",
        num_blocks_per_group=None if leaf else 1,
        non_blocking=stream,
        use_stream=stream,
        block_modules=blocks,
    )


def _lift_for_adapters(transformer: Any, offload: str, device: Any) -> None:
    """The adapter-changing methods of this instance run with the offload hooks lifted (module docstring)."""
    transformer.__dict__["_qedit_offload"] = (offload, device)
    for name in _LIFTED_METHODS:
        method = getattr(transformer, name, None)
        if method is not None:
            transformer.__dict__[name] = _lifted(transformer, method)


def _lifted(module: Any, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        with hooks_lifted(module):
            return method(*args, **kwargs)

    return call


@contextmanager
def hooks_lifted(module: Any) -> Iterator[None]:
    """``module``'s offload hooks off while its layers change, and put back over the changed layers."""
    offload, device = module.__dict__.get("_qedit_offload", ("none", None))
    if offload == "sequential":
        from accelerate import cpu_offload
        from accelerate.hooks import remove_hook_from_module

        remove_hook_from_module(module, recurse=True)  # weights back from accelerate's map onto the CPU
        try:
            yield
        finally:
            cpu_offload(module, device, offload_buffers=len(module._parameters) > 0)
    elif offload == "group":
        from diffusers.hooks.group_offloading import _maybe_remove_and_reapply_group_offloading

        try:
            yield
        finally:
            _maybe_remove_and_reapply_group_offloading(module)  # diffusers' own re-grouping after a LoRA
    else:
        yield
