"""How an engine runs, as opposed to what it edits: memory modes, step caching, compile, CFG batching.

One torch-free value shared by every layer that starts an engine: the CLI's model flags
(``qedit.cli.engine_flags``), the service's settings (``qedit serve`` / ``qedit worker``, reported by
``/readyz`` and ``/metrics``), and ``qedit bench``. The engine applies it at load time
(``qedit.engine.memory``, ``qedit.engine.speed``); nothing here imports torch, so a bad value is
refused before a model loads. Options that change pixels (quantisation, step caching) are recorded
in each output's metadata, so a result says how it was made.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from qedit.errors import InvalidInput

Offload = Literal["none", "model", "group", "sequential"]
Quantize = Literal["none", "int8", "fp8", "nf4", "gguf"]
StepCache = Literal["none", "dbcache", "taylorseer"]
CfgBatch = Literal["auto", "on", "off"]

OFFLOAD_MODES: tuple[str, ...] = ("none", "model", "group", "sequential")
QUANTIZE_MODES: tuple[str, ...] = ("none", "int8", "fp8", "nf4", "gguf")
CACHE_MODES: tuple[str, ...] = ("none", "dbcache", "taylorseer")
CFG_BATCH_MODES: tuple[str, ...] = ("auto", "on", "off")

CUDA_ONLY: dict[str, tuple[str, ...]] = {
    "offload": ("model", "group", "sequential"),  # offloading moves weights between host and GPU
    "quantize": ("fp8", "nf4"),  # torchao's fp8 and bitsandbytes' nf4 kernels are CUDA kernels
}
"""Option -> the values that need a CUDA device; refused elsewhere with a message, never a silent fallback."""


@dataclass(frozen=True)
class EngineOptions:
    """Every knob of how one loaded engine runs; the defaults are the reference's behaviour."""

    offload: Offload = "none"
    quantize: Quantize = "none"
    gguf_file: Path | None = None  # the transformer's weights as a GGUF file (quantize="gguf")
    cache: StepCache = "none"
    cache_threshold: float = 0.08  # cache-dit's residual-difference threshold: higher = more steps reused
    cache_warmup: int = 8  # steps always computed before the cache may reuse one
    compile: bool = False  # torch.compile of the repeated transformer blocks (regional)
    cfg_batch: CfgBatch = "auto"  # both CFG branches in one transformer call; auto = where it is faster
    text_cache: int = 16  # prompt+images encodings kept for reuse (n variations, retries); 0 = off

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Each value in range, named by its field (the CLI maps fields to flags)."""
        for name, allowed in (
            ("offload", OFFLOAD_MODES),
            ("quantize", QUANTIZE_MODES),
            ("cache", CACHE_MODES),
            ("cfg_batch", CFG_BATCH_MODES),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise InvalidInput(f"unknown value {value!r}; choose from {', '.join(allowed)}", field=name)
        if self.quantize == "gguf" and self.gguf_file is None:
            raise InvalidInput("quantize=gguf needs the transformer's .gguf file", field="gguf_file")
        if self.gguf_file is not None and self.quantize != "gguf":
            raise InvalidInput(f"a GGUF file needs quantize=gguf (got {self.quantize})", field="gguf_file")
        from qedit.models.footprint import unsupported  # the one rule on mode combinations

        reason = unsupported(self.offload, self.quantize)
        if reason:
            raise InvalidInput(reason, field="offload")
        if not 0.0 < self.cache_threshold <= 1.0:
            raise InvalidInput(f"must be in (0, 1], got {self.cache_threshold}", field="cache_threshold")
        if not 0 <= self.cache_warmup <= 100:
            raise InvalidInput(f"must be 0-100, got {self.cache_warmup}", field="cache_warmup")
        if not 0 <= self.text_cache <= 1024:
            raise InvalidInput(f"must be 0-1024, got {self.text_cache}", field="text_cache")

    def check_device(self, device: str) -> None:
        """Modes that need CUDA refused on another device, naming the option and the device."""
        if device.startswith("cuda"):
            return
        for name, values in CUDA_ONLY.items():
            value = getattr(self, name)
            if value in values:
                raise InvalidInput(
                    f"{value} needs a CUDA GPU; this engine runs on {device} (use {name}=none, or --device cuda)",
                    field=name,
                )

    def replace(self, **changes: Any) -> EngineOptions:
        return dataclasses.replace(self, **changes)

    def describe(self) -> dict[str, Any]:
        """The options as JSON-able values (``/readyz``, bench reports)."""
        out = dataclasses.asdict(self)
        out["gguf_file"] = str(self.gguf_file) if self.gguf_file is not None else None
        return out

    def changes_pixels(self) -> dict[str, str]:
        """What an output's metadata records: the options under which its pixels differ from the reference's."""
        out: dict[str, str] = {}
        if self.quantize != "none":
            out["quantize"] = self.quantize
        if self.cache != "none":
            out["cache"] = f"{self.cache}(threshold={self.cache_threshold}, warmup={self.cache_warmup})"
        return out
