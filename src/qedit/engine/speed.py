"""Step caching (cache-dit) and regional ``torch.compile`` of the transformer, applied once at load.

Why step caching: at 50 steps, neighbouring steps of the transformer change little, so cache-dit's
DBCache runs the first block, compares its residual with the one of the last fully computed step
(relative L1) and, under ``EngineOptions.cache_threshold``, reuses the other blocks' cached
residual instead of running them (cache-dit reads a threshold of 1.0 or more as "always reuse").
TaylorSeer (``cache="taylorseer"``) extrapolates that residual to first order from the last
computed steps instead of reusing it as is. The first ``cache_warmup`` steps always run in full.
Pixels change (a little), so the options are recorded in each output's metadata
(``EngineOptions.changes_pixels``).

Why on the bare transformer: qedit runs its own staged pipeline, so cache-dit's pipeline wrapper
(which resets its state around ``pipe.__call__``) never runs. Its transformer-only mode keeps one
persistent state instead, which ``StepCache.run`` rebuilds around every denoising loop
(``cache_dit.refresh_context``): nothing of one edit (another image, another LoRA, another output)
leaks into the next, and two identical edits cache the same steps.

Why ``run`` is told the loop's CFG shape: cache-dit does not read diffusers' ``cache_context``
names. With ``enable_separate_cfg`` it keeps the two branches apart by call order (even calls
cond, odd calls uncond), the order in which ``denoise`` and diffusers' Qwen-Image pipelines call
them; with both branches in one batched call, or no CFG, there is one state. Told wrong, it would
compare (and reuse) one branch's residuals for the other. The rows of a batch share each decision;
when a cancelled edit leaves it, the cached residuals no longer fit and the next step runs in full.

Fn=1, Bn=0 (only the first block always runs) is what cache-dit's own Qwen-Image examples, SGLang
and vLLM-omni use: on the real 60-block model a reused step costs 1/60 of a computed one.

Why regional compile: ``compile_repeated_blocks`` compiles the one block class the transformer
repeats, once, instead of the whole model: the compile time of one block for the speed of all.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from qedit.models.options import EngineOptions

log = logging.getLogger(__name__)

FN_BLOCKS = 1  # first blocks always computed; the first one's residual decides whether to reuse
BN_BLOCKS = 0  # last blocks always computed (on top of a reused residual)
TAYLORSEER_ORDER = 1  # cache-dit's default: first-order extrapolation of the cached residual
_KEY = "_qedit_step_cache"  # where a transformer keeps its StepCache
COMPILE_DYNAMIC = True  # sizes symbolic from the first compile: new sizes and text lengths reuse the graph


@dataclass
class CacheCounts:
    """One denoising loop's transformer passes (a CFG branch of a call): blocks run, or reused.

    With CFG in two calls each branch decides for itself; batched, both branches of a call share
    one decision (two passes). Filled in when ``StepCache.run``'s block ends.
    """

    computed: int = 0  # passes that ran every block
    cached: int = 0  # passes that ran the first ``FN_BLOCKS + BN_BLOCKS`` blocks and reused the rest
    blocks: int = 0  # the transformer's blocks

    @property
    def passes(self) -> int:
        return self.computed + self.cached

    @property
    def block_passes(self) -> int:
        """Block forwards actually run."""
        return self.computed * self.blocks + self.cached * (FN_BLOCKS + BN_BLOCKS)

    @property
    def block_saving(self) -> float:
        """How many times fewer block forwards ran than without the cache (1.0: none saved)."""
        return self.passes * self.blocks / self.block_passes if self.block_passes else 1.0

    def __add__(self, other: CacheCounts) -> CacheCounts:
        """Two loops together (an edit's outputs)."""
        blocks = max(self.blocks, other.blocks)
        return CacheCounts(computed=self.computed + other.computed, cached=self.cached + other.cached, blocks=blocks)

    def describe(self) -> dict[str, int | float]:
        """What an edit's stats report."""
        return {"cache_computed": self.computed, "cache_cached": self.cached, "cache_block_saving": self.block_saving}


class StepCache:
    """cache-dit's DBCache (optionally with TaylorSeer) on one transformer. One edit at a time.

    One per transformer, found again with ``StepCache.on``: engines sharing the loaded components
    (a benchmark, a test under other options) share its hooks.
    """

    def __init__(self, transformer: Any, options: EngineOptions) -> None:
        self.transformer = transformer
        self.options = options
        self.blocks = len(transformer.transformer_blocks)

    @classmethod
    def attach(cls, transformer: Any, options: EngineOptions) -> StepCache | None:
        """Install the cache's hooks; None (and nothing installed) when ``options.cache`` is "none".

        Attaching the same cache options again returns the cache already there; other options on a
        transformer that has one are refused (detach it first).
        """
        if options.cache == "none":
            return None
        existing = cls.on(transformer)
        if existing is not None and _cache_fields(existing.options) == _cache_fields(options):
            return existing
        if existing is not None or getattr(transformer, "_is_cached", False):
            raise ValueError("this transformer already has a step cache (other options); detach it first")
        if len(transformer.transformer_blocks) <= FN_BLOCKS + BN_BLOCKS:
            raise ValueError(f"step caching needs more than {FN_BLOCKS + BN_BLOCKS} transformer blocks")
        cache_dit = _cache_dit()
        cache = cls(transformer, options)
        cache_config, calibrator = cache._configs(steps=None, separate_cfg=True)
        with _logs_at(logging.ERROR):  # it warns when diffusers hooks make it skip its block-signature check
            cache_dit.enable_cache(transformer, cache_config=cache_config, calibrator_config=calibrator)
        transformer.__dict__[_KEY] = cache
        log.info("step cache %s on %d blocks (F%dB%d)", options.cache, cache.blocks, FN_BLOCKS, BN_BLOCKS)
        return cache

    @classmethod
    def on(cls, transformer: Any) -> StepCache | None:
        """The cache attached to ``transformer``, if any."""
        cache = transformer.__dict__.get(_KEY)
        return cache if isinstance(cache, cls) else None

    @contextlib.contextmanager
    def run(self, steps: int, *, cfg: bool, batched_cfg: bool = False) -> Iterator[CacheCounts]:
        """Wrap one denoising loop of ``steps`` steps: a fresh cache state before, the counts after.

        ``cfg``: the loop runs a negative branch; ``batched_cfg``: both branches in one call (else
        two calls per step, cond first). The counts are filled in when the block ends, also when
        the loop stopped early (a cancel), then covering the steps that ran.
        """
        separate = cfg and not batched_cfg
        cache_config, calibrator = self._configs(steps=steps, separate_cfg=separate)
        _cache_dit().refresh_context(self.transformer, cache_config=cache_config, calibrator_config=calibrator)
        counts = CacheCounts(blocks=self.blocks)
        try:
            yield counts
        finally:
            self._count(counts, per_call=2 if cfg and batched_cfg else 1)

    def detach(self) -> None:
        """Remove the hooks: the transformer computes every block again, exactly as before ``attach``."""
        cache_dit = _cache_dit()
        with _logs_at(logging.ERROR):  # it warns that it did what it was asked to
            cache_dit.disable_cache(self.transformer)
        self.transformer.__dict__.pop(_KEY, None)

    def _configs(self, steps: int | None, separate_cfg: bool) -> tuple[Any, Any]:
        from cache_dit import DBCacheConfig, TaylorSeerCalibratorConfig

        config = DBCacheConfig(
            Fn_compute_blocks=FN_BLOCKS,
            Bn_compute_blocks=BN_BLOCKS,
            residual_diff_threshold=self.options.cache_threshold,
            max_warmup_steps=self.options.cache_warmup,
            enable_separate_cfg=separate_cfg,
            num_inference_steps=steps,
        )
        calibrator = None
        if self.options.cache == "taylorseer":
            calibrator = TaylorSeerCalibratorConfig(taylorseer_order=TAYLORSEER_ORDER)
        return config, calibrator

    def _count(self, counts: CacheCounts, per_call: int) -> None:
        """From cache-dit's context: calls made, and the steps of each branch that reused the cache."""
        manager = self.transformer._context_manager
        calls = cached = 0
        for name in self.transformer._context_names:
            context = manager.get_context(name)
            calls += context.transformer_executed_steps
            cached += len(context.get_cached_steps()) + len(context.get_cfg_cached_steps())
        counts.cached = cached * per_call
        counts.computed = (calls - cached) * per_call


@contextlib.contextmanager
def cached_loop(transformer: Any, steps: int, *, cfg: bool, batched_cfg: bool = False) -> Iterator[CacheCounts | None]:
    """``StepCache.run`` of the cache on ``transformer``; without one, nothing is done and None given."""
    cache = StepCache.on(transformer)
    if cache is None:
        yield None
        return
    with cache.run(steps, cfg=cfg, batched_cfg=batched_cfg) as counts:
        yield counts


def compile_blocks(transformer: Any, dynamic: bool | None = COMPILE_DYNAMIC) -> None:
    """``torch.compile`` each repeated block (``QwenImageTransformerBlock``), fullgraph.

    Compilation happens lazily, at the first call. ``dynamic=True`` compiles image tokens and text
    length as symbols at once: every size and prompt reuses one graph, plus one more for a batch
    of two rows (batched CFG, request batching: torch never makes a size-1 dimension symbolic).
    torch's default (None) compiles the first call's sizes static, and then recompiles for the
    first other text length and again for the first other image size (measured: 4 graphs vs 2).
    """
    transformer.compile_repeated_blocks(fullgraph=True, dynamic=dynamic)


def _cache_fields(options: EngineOptions) -> tuple[str, float, int]:
    return options.cache, options.cache_threshold, options.cache_warmup


def _cache_dit() -> Any:
    """cache-dit, imported on first use, its INFO chatter (printed to stdout) turned off."""
    os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "warning")  # read once, at its import
    import cache_dit

    _route_logs(logging.WARNING)
    return cache_dit


def _route_logs(level: int) -> None:
    """cache-dit's loggers print to stdout (where a CLI writes its JSON); they go to logging instead."""
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and (name.startswith("cache_dit") or name == "CACHE_DIT"):
            logger.handlers.clear()
            logger.propagate = True
            logger.setLevel(level)


@contextlib.contextmanager
def _logs_at(level: int) -> Iterator[None]:
    _route_logs(level)
    try:
        yield
    finally:
        _route_logs(logging.WARNING)
