"""Measuring a run from the outside, identically for qedit and the reference.

Neither side is trusted to time or count itself: the transformer's passes and seconds come from
forward hooks on the module both sides call, peak memory from the operating system (or the CUDA
allocator), and weight bytes from the tensors themselves, so the two columns of the report are
measured by the same code. Hooks on each transformer block count the blocks that actually ran,
which is how step caching (blocks skipped) shows up even though the transformer is still called.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


class Clock:
    """Wall time that waits for queued GPU work first, so a stage owns its kernels."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


def _batch_of(args: tuple, kwargs: dict[str, Any]) -> int:
    x = kwargs.get("hidden_states", args[0] if args else None)
    return int(x.shape[0]) if isinstance(x, torch.Tensor) and x.dim() > 0 else 1


@dataclass
class PassCounts:
    calls: int = 0  # transformer forward calls
    passes: int = 0  # rows through the transformer: a call on a batch of 2 (both CFG branches) is 2
    seconds: float = 0.0  # inside the transformer's forward
    block_rows: int = 0  # rows through single blocks, summed over blocks
    blocks: int = 0  # blocks in the transformer

    @property
    def computed_passes(self) -> float | None:
        """Passes' worth of blocks that really ran (fewer than ``passes`` when a cache skips blocks)."""
        return self.block_rows / self.blocks if self.blocks and self.block_rows else None


class TransformerProbe:
    """Forward hooks counting calls, rows and seconds of one transformer (and rows of its blocks)."""

    def __init__(self, transformer: torch.nn.Module, clock: Clock) -> None:
        self.clock = clock
        self.counts = PassCounts()
        self._depth = 0
        self._t0 = 0.0
        blocks = list(getattr(transformer, "transformer_blocks", []))
        self.counts.blocks = len(blocks)
        self._handles = [
            transformer.register_forward_pre_hook(self._enter, with_kwargs=True),
            transformer.register_forward_hook(self._leave, always_call=True),
            *(b.register_forward_pre_hook(self._block, with_kwargs=True) for b in blocks),
        ]

    def reset(self) -> None:
        self.counts = PassCounts(blocks=self.counts.blocks)

    def _enter(self, module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if self._depth == 0:
            self._t0 = self.clock()
            self.counts.calls += 1
            self.counts.passes += _batch_of(args, kwargs)
        self._depth += 1

    def _leave(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.counts.seconds += self.clock() - self._t0

    def _block(self, module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        self.counts.block_rows += _batch_of(args, kwargs)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _status_kb(field: str) -> int | None:
    try:
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_bytes() -> int | None:
    kb = _status_kb("VmRSS")
    return kb * 1024 if kb is not None else None


@dataclass(frozen=True)
class PeakMemory:
    kind: str  # "rss" (the process, CPU) or "cuda" (the allocator's max allocated)
    peak: int  # bytes
    before: int  # bytes when the run began

    @property
    def added(self) -> int:
        return max(0, self.peak - self.before)


class MemoryMeter:
    """Peak memory of one run: ``with meter: ...`` then ``meter.result``.

    On CPU, the process's resident set: its high-water mark reset at the start (``clear_refs``,
    Linux) where allowed, and a sampling thread as well, so the peak is seen either way.
    """

    def __init__(self, device: torch.device, interval: float = 0.005) -> None:
        self.cuda = device.type == "cuda"
        self.interval = interval
        self.result: PeakMemory | None = None
        self._stop = threading.Event()
        self._sampled = 0
        self._thread: threading.Thread | None = None
        self._before = 0
        self._hwm_reset = False

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._sampled = max(self._sampled, rss_bytes() or 0)

    def __enter__(self) -> MemoryMeter:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._before = torch.cuda.memory_allocated()
            return self
        self._before = rss_bytes() or 0
        self._sampled = self._before
        try:
            PROC_CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS
            self._hwm_reset = True
        except OSError:
            self._hwm_reset = False
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="qedit-bench-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.result = PeakMemory("cuda", torch.cuda.max_memory_allocated(), self._before)
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        peak = max(self._sampled, rss_bytes() or 0)
        if self._hwm_reset:
            peak = max(peak, (_status_kb("VmHWM") or 0) * 1024)
        self.result = PeakMemory("rss", peak, self._before)


def tensor_bytes(t: torch.Tensor) -> int:
    """Storage of a tensor; a tensor subclass (torchao's quantised weights) is the sum of its parts."""
    if hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, name)) for name in names)
    return t.numel() * t.element_size()


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers, as stored (quantised weights count as quantised)."""
    return sum(tensor_bytes(p) for p in module.parameters()) + sum(tensor_bytes(b) for b in module.buffers())
