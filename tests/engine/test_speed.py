"""Step caching (cache-dit) and regional compile on the tiny preset.

What a user checks: with the cache a 50-step edit runs far fewer full transformer passes and its
pixels stay within a few levels of the uncached edit; the same edit twice gives the same image and
the same counts; LoRAs still act; a cache that reuses nothing, or one taken off, changes no pixel;
compiled blocks give the eager output and compile once.

The tiny model's weights are random, so its first block's residual changes by 30-50% (relative
L1) from step to step where a trained model's changes by a few percent: it needs a far higher
threshold (``THRESHOLD``) than the real model's default 0.08 to reuse steps. With 2 blocks, a
reused pass still runs 1 of them, so block forwards can fall at most 2x here (60x on the real one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from qedit.engine.denoise import Group, PassCount, Row, Schedule, denoise
from qedit.engine.encode import TextEmbedding
from qedit.engine.latents import make_scheduler, timesteps
from qedit.engine.pipeline import Engine
from qedit.engine.speed import CacheCounts, StepCache, cached_loop, compile_blocks
from qedit.errors import EditCancelled
from qedit.loras.options import LoraOptions
from qedit.loras.sources import LoraPolicy
from qedit.loras.store import LoraStore
from qedit.models.options import EngineOptions
from qedit.models.protocol import CancelToken, EditRequest
from qedit.params import EditParams
from tests.support.parity import max_diff, noise_image

STEPS = 50
THRESHOLD = 0.5  # the tiny model's residuals move 0.3-0.5 per step: below ~0.3 nothing is reused
WARMUP = 8
PIXEL_TOLERANCE = 4  # 8-bit levels from the uncached edit; measured 2 for both modes at THRESHOLD
LATENT_TOLERANCE = 0.1  # on N(0, 1)-scale latents; measured 0.013 (dbcache), 0.039 (taylorseer)
MODES = ("dbcache", "taylorseer")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The tiny model's matrices are a few dozen wide: on shared cores, intra-op threads only wait on
    each other (a 50-step edit takes 30x longer with two)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def engine(tiny_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """Its own engine: these tests put hooks and adapters on its transformer."""
    store = LoraStore(LoraPolicy.operator(), tmp_path_factory.mktemp("speed-loras"))
    return Engine.load(str(tiny_path), loras=LoraOptions(store=store, lightning_dirs=()))


Attach = Callable[..., StepCache]


@pytest.fixture
def attach(engine: Engine) -> Iterator[Attach]:
    """``attach(mode, threshold)`` -> a StepCache on the engine's transformer, taken off after the test."""
    caches: list[StepCache] = []

    def make(mode: str, threshold: float = THRESHOLD) -> StepCache:
        options = EngineOptions(cache=mode, cache_threshold=threshold, cache_warmup=WARMUP)  # type: ignore[arg-type]
        cache = StepCache.attach(engine.components.transformer, options)
        assert cache is not None
        if cache not in caches:
            caches.append(cache)
        return cache

    yield make
    for cache in caches:
        cache.detach()


def _edit(engine: Engine, seed: int = 3, **kw: object) -> Image.Image:
    params = EditParams(
        **{
            "prompt": "make it a watercolour",
            "negative_prompt": "blurry",
            "true_cfg_scale": 4.0,
            "seed": seed,
            "num_inference_steps": STEPS,
            **kw,
        }
    )
    return engine.edit(EditRequest(params=params, images=(noise_image(128, 96, 0),))).outputs[0].image


def _cached_edit(engine: Engine, cache: StepCache, **kw: object) -> tuple[Image.Image, CacheCounts]:
    """One edit inside the cache's run, as the engine's denoise stage calls it (``cached_loop``)."""
    assert StepCache.on(engine.components.transformer) is cache
    with cached_loop(engine.components.transformer, STEPS, cfg=True, batched_cfg=engine.batch_cfg) as counts:
        image = _edit(engine, **kw)
    assert counts is not None
    return image, counts


def _row(seed: int, grid: tuple[int, int], cfg: bool, group: int = 0) -> Row:
    """Random noise, reference and texts (cond 12 tokens, uncond 9) at an h x w token grid."""
    g = torch.Generator().manual_seed(seed)
    n = grid[0] * grid[1]
    latents, references = torch.randn(1, n, 64, generator=g), torch.randn(1, n, 64, generator=g)
    positive = TextEmbedding(torch.randn(1, 12, 32, generator=g), None)
    negative = TextEmbedding(torch.randn(1, 9, 32, generator=g), None) if cfg else None
    return Row(latents=latents, noise=latents, references=references, positive=positive, negative=negative, group=group)


def _schedule(scheduler_config: dict, grid: tuple[int, int], cfg: bool, batched: bool) -> tuple[Any, Schedule]:
    """A fresh scheduler (it keeps a step index) and the loop's schedule for ``grid``."""
    h, w = grid
    scheduler = make_scheduler(scheduler_config, STEPS)
    schedule = Schedule(
        img_shapes=[(1, h, w), (1, h, w)],
        timesteps=timesteps(scheduler, STEPS, h * w, torch.device("cpu")),
        cfg=4.0 if cfg else 1.0,
        batch_cfg=batched,
    )
    return scheduler, schedule


def _loop(
    transformer: torch.nn.Module,
    scheduler_config: dict,
    *,
    cfg: bool,
    batched: bool,
    seed: int = 0,
    grid: tuple[int, int] = (8, 8),
) -> torch.Tensor:
    """``denoise`` on random conditioning: the engine's loop without its encoders."""
    scheduler, schedule = _schedule(scheduler_config, grid, cfg, batched)
    out = denoise(transformer, scheduler, schedule, [_row(seed, grid, cfg)], [Group()], PassCount())[0]
    assert isinstance(out, torch.Tensor)
    return out


def test_no_cache_attaches_nothing(engine: Engine) -> None:
    transformer = engine.components.transformer
    assert StepCache.attach(transformer, EngineOptions()) is None
    assert StepCache.on(transformer) is None and not hasattr(transformer, "_context_manager")
    with cached_loop(transformer, STEPS, cfg=True) as counts:
        assert counts is None


def test_a_cache_that_reuses_nothing_and_one_taken_off_change_no_pixel(engine: Engine) -> None:
    base = _edit(engine)
    # the default threshold (0.08): the tiny model's residuals never stay under it
    options = EngineOptions(cache="dbcache", cache_warmup=WARMUP)
    cache = StepCache.attach(engine.components.transformer, options)
    assert cache is not None
    try:
        image, counts = _cached_edit(engine, cache)
    finally:
        cache.detach()
    assert counts == CacheCounts(computed=2 * STEPS, cached=0, blocks=2)
    assert max_diff(image, base) == 0
    assert max_diff(_edit(engine), base) == 0


@pytest.mark.parametrize("mode", MODES)
def test_fifty_steps_run_under_a_third_of_the_full_passes(engine: Engine, attach: Attach, mode: str) -> None:
    base = _edit(engine)
    image, counts = _cached_edit(engine, attach(mode))
    assert counts.passes == 2 * STEPS  # cond and uncond, every step
    assert counts.computed >= 2 * WARMUP  # warm-up steps always run in full
    assert counts.computed * 3 <= counts.passes  # measured 26 of 100; the goal, 1.6x fewer, allows 62
    assert counts.block_saving > 1.5  # 2 blocks, 1 always run: at most 2x (1.72x after 8 warm-up steps)
    assert 0 < max_diff(image, base) <= PIXEL_TOLERANCE


@pytest.mark.parametrize("mode", MODES)
def test_cfg_in_two_calls_in_one_call_or_none(engine: Engine, attach: Attach, mode: str) -> None:
    transformer, config = engine.components.transformer, engine.components.scheduler_config
    shapes = {"two calls": (True, False), "batched": (True, True), "no cfg": (False, False)}
    plain = {name: _loop(transformer, config, cfg=c, batched=b) for name, (c, b) in shapes.items()}
    cache = attach(mode)
    for name, (cfg, batched) in shapes.items():
        with cache.run(STEPS, cfg=cfg, batched_cfg=batched) as counts:
            out = _loop(transformer, config, cfg=cfg, batched=batched)
        branches = 2 if cfg else 1
        assert counts.passes == branches * STEPS, name
        assert counts.cached > 0 and counts.computed * 1.6 <= counts.passes, (name, counts)
        # the warm-up is WARMUP steps whatever the calls per step (measured: 12 steps run in full)
        assert branches * WARMUP <= counts.computed < branches * 2 * WARMUP, (name, counts)
        assert torch.isfinite(out).all()
        assert 0 < (out - plain[name]).abs().max() <= LATENT_TOLERANCE, name


def test_every_loop_starts_fresh(engine: Engine, attach: Attach) -> None:
    transformer, config = engine.components.transformer, engine.components.scheduler_config
    cache = attach("taylorseer")
    runs = []
    for seed in (0, 1, 0):
        with cache.run(STEPS, cfg=True) as counts:
            runs.append((_loop(transformer, config, cfg=True, batched=False, seed=seed), counts))
    (first, first_counts), (other, _), (again, again_counts) = runs
    assert torch.equal(first, again) and first_counts == again_counts
    assert not torch.equal(first, other)


def test_two_identical_edits_give_the_same_image_and_counts(engine: Engine, attach: Attach) -> None:
    cache = attach("dbcache")
    first, first_counts = _cached_edit(engine, cache)
    _cached_edit(engine, cache, seed=11)
    again, again_counts = _cached_edit(engine, cache)
    assert max_diff(first, again) == 0 and first_counts == again_counts


def test_a_lora_acts_under_the_cache_and_leaves_nothing_behind(engine: Engine, tiny_path: Path, attach: Attach) -> None:
    lora = [{"path": str(tiny_path / "loras" / "style-diffusers.safetensors"), "scale": 0.8}]
    uncached_lora = _edit(engine, loras=lora)
    cache = attach("dbcache")
    base, _ = _cached_edit(engine, cache)
    styled, counts = _cached_edit(engine, cache, loras=lora)
    assert counts.cached > 0
    assert max_diff(styled, base) > 2 * PIXEL_TOLERANCE, "the LoRA did not change the cached edit"
    assert max_diff(styled, uncached_lora) <= PIXEL_TOLERANCE
    assert max_diff(_cached_edit(engine, cache)[0], base) == 0


def test_one_cache_per_transformer(engine: Engine, attach: Attach) -> None:
    cache = attach("dbcache")
    assert attach("dbcache") is cache  # engines sharing the components share it
    with pytest.raises(ValueError, match="already has a step cache"):
        attach("taylorseer")


def test_a_cancelled_edit_leaves_the_rest_of_a_cached_batch_running(engine: Engine, attach: Attach) -> None:
    """The rows left after a cancel no longer match the cached residuals' shapes: the next step runs in full."""
    transformer, config = engine.components.transformer, engine.components.scheduler_config
    alone = _loop(transformer, config, cfg=True, batched=False)
    cache = attach("taylorseer")
    cancel = CancelToken()

    def on_step(step: int, total: int, elapsed: float) -> None:
        if step == 20:
            cancel.cancel()

    scheduler, schedule = _schedule(config, (8, 8), cfg=True, batched=False)
    rows = [_row(0, (8, 8), cfg=True), _row(1, (8, 8), cfg=True, group=1)]
    with cache.run(STEPS, cfg=True) as counts:
        kept, gone = denoise(transformer, scheduler, schedule, rows, [Group(), Group(on_step, cancel)], PassCount())
    assert isinstance(gone, EditCancelled)
    assert counts.passes == 2 * STEPS and counts.cached > 0
    assert isinstance(kept, torch.Tensor) and torch.isfinite(kept).all()
    assert (kept - alone).abs().max() <= LATENT_TOLERANCE


def test_counts_report_what_was_saved() -> None:
    counts = CacheCounts(computed=20, cached=80, blocks=60)
    assert counts.passes == 100 and counts.block_passes == 20 * 60 + 80
    assert counts.describe() == {"cache_computed": 20, "cache_cached": 80, "cache_block_saving": 6000 / 1280}
    assert CacheCounts(blocks=60).block_saving == 1.0
    assert counts + CacheCounts(computed=1, cached=2, blocks=60) == CacheCounts(computed=21, cached=82, blocks=60)


@pytest.mark.slow
def test_compiled_blocks_match_eager_and_compile_once(engine: Engine) -> None:
    from diffusers import QwenImageTransformer2DModel
    from torch._dynamo.utils import counters

    transformer = QwenImageTransformer2DModel.from_pretrained(engine.components.path / "transformer").eval()
    config = engine.components.scheduler_config
    # two text lengths (cond, uncond), three image sizes, batch 1 and 2 (batched CFG)
    runs = [(True, False, (8, 8)), (False, False, (6, 10)), (True, True, (4, 12))]
    eager = [_loop(transformer, config, cfg=c, batched=b, grid=g) for c, b, g in runs]
    compile_blocks(transformer)
    torch._dynamo.reset()
    counters.clear()
    compiled = [_loop(transformer, config, cfg=c, batched=b, grid=g) for c, b, g in runs]
    graphs = counters["stats"]["unique_graphs"]
    again = [_loop(transformer, config, cfg=c, batched=b, grid=g) for c, b, g in runs]
    assert counters["stats"]["unique_graphs"] == graphs, "a second call recompiled"
    assert graphs <= 2  # one symbolic graph for batch 1, one for batch 2 (size-1 dims are never symbolic)
    for e, c, a in zip(eager, compiled, again, strict=True):
        assert (c - e).abs().max() <= 1e-4 and torch.equal(c, a)


@pytest.mark.slow
def test_compiled_blocks_under_the_cache_reuse_the_same_steps(engine: Engine, attach: Attach) -> None:
    from diffusers import QwenImageTransformer2DModel

    transformer = QwenImageTransformer2DModel.from_pretrained(engine.components.path / "transformer").eval()
    config = engine.components.scheduler_config
    eager_cache = attach("dbcache")  # the same weights, eager
    with eager_cache.run(STEPS, cfg=True) as eager_counts:
        eager = _loop(engine.components.transformer, config, cfg=True, batched=False)
    compile_blocks(transformer)
    options = EngineOptions(cache="dbcache", cache_threshold=THRESHOLD, cache_warmup=WARMUP)
    cache = StepCache.attach(transformer, options)
    assert cache is not None
    with cache.run(STEPS, cfg=True) as counts:
        compiled = _loop(transformer, config, cfg=True, batched=False)
    cache.detach()
    assert counts == eager_counts and counts.cached > 0
    assert (compiled - eager).abs().max() <= 1e-4


def test_a_cached_engine_reports_its_saving_and_records_the_cache(tiny_path: Path) -> None:
    """Through the options as a user gives them (``--cache dbcache``): stats and metadata say what ran."""
    options = EngineOptions(cache="dbcache", cache_threshold=THRESHOLD, cache_warmup=WARMUP)
    engine = Engine.load(str(tiny_path), options=options)
    params = EditParams(prompt="make it a watercolour", seed=3, num_inference_steps=STEPS)
    result = engine.edit(EditRequest(params=params, images=(noise_image(128, 96, 0),)))
    stats = result.stats
    assert stats["transformer_passes"] == 2 * STEPS
    assert stats["cached_passes"] == stats["cache_cached"] > 0
    assert stats["cache_computed"] + stats["cache_cached"] == 2 * STEPS
    assert "dbcache" in result.outputs[0].metadata["engine_options"]
