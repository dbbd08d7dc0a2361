"""LoRA adapters on the transformer, chosen per request, through diffusers' and peft's machinery.

Each file is loaded once: ``QwenImageLoraLoaderMixin.lora_state_dict`` converts its key format
(kohya, ComfyUI, DiffSynth, lightx2v -> diffusers) and ``load_lora_into_transformer`` injects peft
LoRA layers under an adapter name made from the file's sha256. Nothing is fused: a request turns on
its set with ``set_adapters(names, scales)``, which is exactly what diffusers' pipelines compute
after ``load_lora_weights`` + ``set_adapters`` (hence the parity tests), and a request without
LoRAs disables them, so every adapted layer computes its base layer alone: the base model, bit for
bit. Loaded adapters stay on the model in an LRU bounded by count and bytes, so switching between
a few LoRAs costs nothing after the first use.

A file is checked before it touches the model (every module it adapts must exist with the shapes
it claims); should diffusers still fail midway, the half-made adapter is deleted and the previous
activation restored, so a failed load leaves the model as it was (a test holds the base output
bit-identical across one).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from qedit.errors import InvalidInput
from qedit.loras.store import ResolvedLora

log = logging.getLogger(__name__)
PREFIX = "transformer."


@dataclass(frozen=True)
class ActiveLora:
    """A resolved LoRA at a scale, and the request field it came from (for error messages)."""

    lora: ResolvedLora
    scale: float
    field: str

    @property
    def adapter(self) -> str:
        return adapter_name(self.lora)

    def record(self) -> dict[str, Any]:
        """What an output's metadata says about it."""
        record: dict[str, Any] = {"name": self.lora.name, "sha256": self.lora.sha256, "scale": self.scale}
        if self.field == "fast":
            record["lightning"] = True  # put there by fast mode, not asked for in loras
        return record


def adapter_name(lora: ResolvedLora) -> str:
    return f"lora_{lora.sha256[:16]}"


@dataclass
class AdapterStats:
    loads: int = 0
    hits: int = 0
    evictions: int = 0
    load_seconds: float = 0.0


@dataclass
class _Loaded:
    nbytes: int
    lora: ResolvedLora = field(repr=False)


class Adapters:
    """The transformer's adapters. Not thread-safe: the engine runs one edit at a time.

    One registry per transformer (``Adapters.of``): two engines sharing a transformer (a benchmark,
    a test at other sizes) must see the same loaded adapters, or the second would load a name the
    first already holds.
    """

    @classmethod
    def of(cls, transformer: Any, *, max_loaded: int, max_bytes: int) -> Adapters:
        existing = transformer.__dict__.get("_qedit_adapters")
        if isinstance(existing, cls):
            existing.max_loaded, existing.max_bytes = max(1, max_loaded), max_bytes
            return existing
        adapters = cls(transformer, max_loaded=max_loaded, max_bytes=max_bytes)
        transformer.__dict__["_qedit_adapters"] = adapters
        return adapters

    def __init__(self, transformer: Any, *, max_loaded: int, max_bytes: int) -> None:
        self.transformer = transformer
        self.max_loaded = max(1, max_loaded)
        self.max_bytes = max_bytes
        self.stats = AdapterStats()
        self._loaded: OrderedDict[str, _Loaded] = OrderedDict()
        self._active: tuple[tuple[str, float], ...] = ()

    @property
    def loaded(self) -> tuple[str, ...]:
        """Adapter names on the model, least recently used first."""
        return tuple(self._loaded)

    @property
    def loaded_bytes(self) -> int:
        return sum(v.nbytes for v in self._loaded.values())

    def activate(self, active: Sequence[ActiveLora]) -> None:
        """Make exactly ``active`` (with their scales) the adapters in effect; none: the base model."""
        scales: dict[str, float] = {}
        for a in active:  # the same file twice adds up, as two adapters of one file would
            scales[a.adapter] = scales.get(a.adapter, 0.0) + a.scale
        for a in active:
            if a.adapter in self._loaded:
                self._loaded.move_to_end(a.adapter)
                self.stats.hits += 1
            else:
                self._load(a)
        self._evict(keep=set(scales))
        self._apply(tuple(scales.items()))

    # -- internals -----------------------------------------------------------------------------

    def _apply(self, active: tuple[tuple[str, float], ...]) -> None:
        t = self.transformer
        if not active:
            if self._loaded:
                t.disable_lora()
        else:
            t.enable_lora()
            t.set_adapters([n for n, _ in active], [s for _, s in active])
        self._active = active

    def _load(self, a: ActiveLora) -> None:
        from diffusers.loaders.lora_pipeline import QwenImageLoraLoaderMixin

        file = a.lora.shown
        start = time.perf_counter()
        try:
            state_dict, metadata = QwenImageLoraLoaderMixin.lora_state_dict(str(a.lora.file), return_lora_metadata=True)
        except Exception as e:
            raise InvalidInput(f"{file} cannot be read as a LoRA: {_reason(e, a)}", field=a.field) from None
        if state_dict and not any(k.startswith(PREFIX) for k in state_dict):
            # a bare PEFT state dict of the transformer (no "transformer." prefix): diffusers would
            # silently load nothing from it
            state_dict = {PREFIX + k: v for k, v in state_dict.items()}
        nbytes = self._check(state_dict, a)
        try:
            with warnings.catch_warnings():  # peft warns that a model may hold several adapters: it does
                warnings.filterwarnings("ignore", message=".*multiple adapters.*")
                QwenImageLoraLoaderMixin.load_lora_into_transformer(
                    state_dict, transformer=self.transformer, adapter_name=a.adapter, metadata=metadata
                )
        except Exception as e:
            self._discard(a.adapter)
            self._apply(self._active)
            raise InvalidInput(f"{file} does not load onto this model: {_reason(e, a)}", field=a.field) from None
        self._loaded[a.adapter] = _Loaded(nbytes=nbytes, lora=a.lora)
        self.stats.loads += 1
        self.stats.load_seconds += time.perf_counter() - start
        log.info("loaded LoRA %s (%s, %.1f MB)", a.lora.name, a.adapter, nbytes / 1e6)

    def _check(self, state_dict: dict[str, Any], a: ActiveLora) -> int:
        """Every adapted module exists and takes the shapes the file has; returns the adapter's bytes."""
        import torch

        file = a.lora.shown
        keys = [k for k in state_dict if k.startswith(PREFIX)]
        if not keys:
            raise InvalidInput(f"{file} holds no LoRA weights for the transformer", field=a.field)
        itemsize = torch.empty((), dtype=next(self.transformer.parameters()).dtype).element_size()
        nbytes = 0
        for key in keys:
            value = state_dict[key]
            nbytes += value.numel() * itemsize
            name, _, part = key.removeprefix(PREFIX).rpartition(".lora_")
            if part not in ("A.weight", "B.weight"):
                continue
            try:
                module = self.transformer.get_submodule(name)
            except AttributeError:
                raise InvalidInput(f"{file} does not fit this model: it has no layer {name}", field=a.field) from None
            base = getattr(module, "base_layer", module)
            if not isinstance(base, torch.nn.Linear):
                raise InvalidInput(f"{file} does not fit this model: {name} is not a linear layer", field=a.field)
            want = base.in_features if part == "A.weight" else base.out_features
            got = value.shape[1] if part == "A.weight" else value.shape[0]
            if value.ndim != 2 or got != want:
                side = "in" if part == "A.weight" else "out"
                raise InvalidInput(
                    f"{file} does not fit this model: {name} has {want} {side} features, the LoRA {got}",
                    field=a.field,
                )
        return nbytes

    def _evict(self, keep: set[str]) -> None:
        while self._loaded and (len(self._loaded) > self.max_loaded or self.loaded_bytes > self.max_bytes):
            victim = next((n for n in self._loaded if n not in keep), None)
            if victim is None:
                return  # the request's own set is over the bounds: it still runs
            self._discard(victim)
            self._loaded.pop(victim, None)
            self.stats.evictions += 1

    def _discard(self, name: str) -> None:
        if name in getattr(self.transformer, "peft_config", {}):
            with warnings.catch_warnings():  # peft says which adapter it activates instead: _apply decides
                warnings.filterwarnings("ignore", message=".*was active which is now deleted.*")
                self.transformer.delete_adapters(name)


def _reason(e: Exception, a: ActiveLora) -> str:
    """The library's first line, with the file named as the user named it."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text.replace(str(a.lora.file), a.lora.shown)[:300]
