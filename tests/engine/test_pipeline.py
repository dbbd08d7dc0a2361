"""The engine on the tiny preset: sizes, seeds, reproducibility, progress, cancellation, limits."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qedit.engine.pipeline import Engine
from qedit.errors import EditCancelled, InvalidInput
from qedit.models.protocol import CancelToken, EditRequest
from qedit.params import Box, EditParams


def _photo(w: int = 256, h: int = 192, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)


def _edit(engine, **kw):
    images = kw.pop("images", (_photo(),))
    return engine.edit(EditRequest(params=EditParams(**{"prompt": "make the sky purple", **kw}), images=images))


def test_output_has_the_input_size_and_reruns_identically(tiny_engine) -> None:
    img = _photo(257, 190)
    first = _edit(tiny_engine, images=(img,), seed=42, num_inference_steps=3)
    again = _edit(tiny_engine, images=(img,), seed=42, num_inference_steps=3)
    out = first.outputs[0]
    assert out.image.size == (257, 190)
    assert out.seed == 42
    assert np.array_equal(np.asarray(out.image), np.asarray(again.outputs[0].image))
    other = _edit(tiny_engine, images=(img,), seed=43, num_inference_steps=3)
    assert not np.array_equal(np.asarray(out.image), np.asarray(other.outputs[0].image))


def test_metadata_lets_the_edit_be_rerun(tiny_engine) -> None:
    out = _edit(tiny_engine, seed=5, num_inference_steps=2, negative_prompt="blurry").outputs[0]
    meta = out.metadata
    assert meta["prompt"] == "make the sky purple" and meta["negative_prompt"] == "blurry"
    assert meta["seed"] == "5" and meta["steps"] == "2" and meta["cfg"] == "4" and meta["size"] == "256x192"
    assert meta["model"] == tiny_engine.model_id and meta["engine"].startswith("qedit ")
    params = json.loads(meta["params"])
    params.pop("model")
    rerun = tiny_engine.edit(EditRequest(params=EditParams(**params), images=(_photo(),))).outputs[0]
    assert np.array_equal(np.asarray(rerun.image), np.asarray(out.image))


def test_random_seed_is_reported_and_reproduces(tiny_engine) -> None:
    out = _edit(tiny_engine, seed=-1, num_inference_steps=1).outputs[0]
    assert 0 <= out.seed <= 2_147_483_647
    again = _edit(tiny_engine, seed=out.seed, num_inference_steps=1).outputs[0]
    assert np.array_equal(np.asarray(out.image), np.asarray(again.image))


def test_several_outputs_use_consecutive_seeds(tiny_engine) -> None:
    result = _edit(tiny_engine, seed=10, num_images=2, num_inference_steps=1)
    assert [o.seed for o in result.outputs] == [10, 11]
    single = _edit(tiny_engine, seed=11, num_inference_steps=1).outputs[0]
    assert np.array_equal(np.asarray(result.outputs[1].image), np.asarray(single.image))


def test_explicit_output_size(tiny_engine) -> None:
    out = _edit(tiny_engine, size=(320, 256), num_inference_steps=1).outputs[0]
    assert out.image.size == (320, 256)
    assert out.metadata["size"] == "320x256"


def test_progress_callback_and_cancel(tiny_engine) -> None:
    seen: list[tuple[int, int, float]] = []
    tiny_engine.edit(
        EditRequest(params=EditParams(prompt="x", num_inference_steps=3, num_images=2), images=(_photo(),)),
        on_step=lambda s, n, e: seen.append((s, n, e)),
    )
    assert [(s, n) for s, n, _ in seen] == [(i, 6) for i in range(1, 7)]
    token = CancelToken()
    steps: list[int] = []

    def cancel_after_first(step: int, total: int, elapsed: float) -> None:
        steps.append(step)
        token.cancel()

    with pytest.raises(EditCancelled):
        tiny_engine.edit(
            EditRequest(params=EditParams(prompt="x", num_inference_steps=4), images=(_photo(),)),
            on_step=cancel_after_first,
            cancel=token,
        )
    assert steps == [1]


def test_cfg_one_runs_the_conditional_branch_only(tiny_engine) -> None:
    calls = 0
    transformer = tiny_engine.components.transformer
    original = transformer.forward

    def counting(*a, **k):
        nonlocal calls
        calls += 1
        return original(*a, **k)

    transformer.forward = counting
    try:
        _edit(tiny_engine, true_cfg_scale=1.0, num_inference_steps=2)
        assert calls == 2
        calls = 0
        _edit(tiny_engine, true_cfg_scale=4.0, num_inference_steps=2)
        assert calls == 4
    finally:
        del transformer.forward


def test_too_many_images_is_a_clear_error(tiny_engine, tiny_plus_engine) -> None:
    with pytest.raises(InvalidInput, match=r"takes at most 1 image\(s\), got 2") as e:
        _edit(tiny_engine, images=(_photo(), _photo()))
    assert e.value.field == "images"
    with pytest.raises(InvalidInput, match=r"takes at most 3 image\(s\), got 4"):
        _edit(tiny_plus_engine, images=(_photo(),) * 4)


def test_the_engine_refuses_what_the_cli_and_the_api_refuse(tiny_engine) -> None:
    """The engine applies ``check_request``, the one rule of a request against its images."""
    with pytest.raises(InvalidInput, match="at least 1 image") as e:
        _edit(tiny_engine, images=())
    assert e.value.field == "images"
    with pytest.raises(InvalidInput, match="width 256, got 300") as e:
        _edit(tiny_engine, boxes=(Box(x0=0, y0=0, x1=300, y1=10),))  # the photo is 256 x 192
    assert e.value.field == "boxes[0]"
    params = EditParams(prompt="x", boxes=(Box(x0=10, y0=10, x1=100, y1=100),), box_mask=True)
    with pytest.raises(InvalidInput, match="a mask or box_mask, not both") as e:
        tiny_engine.edit(EditRequest(params=params, images=(_photo(),), mask=Image.new("L", (256, 192), 255)))
    assert e.value.field == "mask"


@pytest.mark.parametrize(("cfg", "per_step"), [(4.0, ["cond", "uncond"]), (1.0, ["cond"])])
def test_each_transformer_call_runs_in_its_cache_context(tiny_path: Path, cfg: float, per_step: list[str]) -> None:
    """Cache hooks (diffusers' FirstBlockCache, cache-dit) keep one state per context name, read as
    this stateful hook reads it: per step the conditional pass, then the unconditional one with CFG."""
    from diffusers.hooks.hooks import BaseState, HookRegistry, ModelHook, StateManager

    class ContextRecorder(ModelHook):
        _is_stateful = True

        def __init__(self) -> None:
            super().__init__()
            self.state = StateManager(BaseState)  # diffusers sets the context on every StateManager
            self.names: list[str] = []

        def pre_forward(self, module, *args, **kwargs):
            self.names.append(self.state.context.name)  # raises when a call runs outside any context
            return args, kwargs

    engine = Engine.load(str(tiny_path))  # its own copy: the session's engine stays hook-free
    recorder = ContextRecorder()
    HookRegistry.check_if_exists_or_initialize(engine.components.transformer).register_hook(recorder, "recorder")
    _edit(engine, true_cfg_scale=cfg, negative_prompt=" ", num_inference_steps=2)
    assert recorder.names == per_step * 2


def test_plus_edits_with_three_images(tiny_plus_engine) -> None:
    images = (_photo(200, 300, 1), _photo(300, 200, 2), _photo(256, 256, 3))
    out = _edit(tiny_plus_engine, images=images, num_inference_steps=2, seed=1).outputs[0]
    assert out.image.size == (256, 256)  # the last image sets the output


def test_prompt_over_the_token_limit_is_refused(tiny_engine) -> None:
    with pytest.raises(InvalidInput, match=r"prompt: is \d+ tokens; the limit of tiny is 1024"):
        _edit(tiny_engine, prompt="word " * 1100)


def test_chinese_and_mixed_prompts(tiny_engine) -> None:
    a = _edit(tiny_engine, prompt="把招牌上的字改成“开业大吉”", seed=1, num_inference_steps=1).outputs[0]
    b = _edit(tiny_engine, prompt="Change the sign to “开业大吉”", seed=1, num_inference_steps=1).outputs[0]
    assert a.metadata["prompt"] == "把招牌上的字改成“开业大吉”"
    assert not np.array_equal(np.asarray(a.image), np.asarray(b.image))  # the instruction reaches the model


def test_tiny_edit_takes_seconds(tiny_engine) -> None:
    start = time.perf_counter()
    _edit(tiny_engine, images=(_photo(256, 256),), num_inference_steps=4)
    assert time.perf_counter() - start < 20  # seconds on 2 CPU cores; typically ~1-2 s


def test_a_single_step_gives_an_image_not_nan(tiny_engine) -> None:
    """The reference's schedule is 0/0 at one step (a black image); qedit's is sigma 1 -> 0."""
    out = _edit(tiny_engine, num_inference_steps=1, seed=2).outputs[0]
    assert np.asarray(out.image).std() > 1.0
