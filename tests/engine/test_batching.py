"""Batched CFG, request batching (``Engine.edit_batch``) and encoding reuse on the tiny preset.

What a user checks: a batched output looks like the one-by-one output with the same seed (within
float rounding, stated as ``TOLERANCE`` 8-bit levels), a cancelled or refused edit of a batch
leaves the others finishing, and nothing about reuse changes a pixel.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from qedit.engine.pipeline import Engine
from qedit.errors import EditCancelled, InvalidInput
from qedit.models.batching import BatchItem
from qedit.models.options import EngineOptions
from qedit.models.protocol import CancelToken, EditRequest
from qedit.params import EditParams
from tests.support.parity import max_diff, noise_image

TOLERANCE = 1  # 8-bit levels between a batched output and its one-by-one run


def _request(prompt: str = "make it blue", seed: int = 3, steps: int = 3, image: Image.Image | None = None, **kw):
    params = EditParams(prompt=prompt, seed=seed, num_inference_steps=steps, **kw)
    return EditRequest(params=params, images=(image or noise_image(128, 96, 0),))


def _with(engine: Engine, **options) -> Engine:
    """The same weights under other options (an engine is cheap; the components are shared)."""
    return Engine(dataclasses.replace(engine.components, options=EngineOptions(**options)))


def test_batched_cfg_matches_two_calls_with_half_the_calls(tiny_engine) -> None:
    two = _with(tiny_engine, cfg_batch="off").edit(_request(negative_prompt="blurry, low quality"))
    one = _with(tiny_engine, cfg_batch="on").edit(_request(negative_prompt="blurry, low quality"))
    assert max_diff(one.outputs[0].image, two.outputs[0].image) <= TOLERANCE
    assert two.stats["transformer_calls"] == 6 and one.stats["transformer_calls"] == 3
    assert one.stats["transformer_passes"] == two.stats["transformer_passes"] == 6


def test_auto_batches_cfg_on_cuda_only(tiny_engine) -> None:
    assert not _with(tiny_engine, cfg_batch="auto").batch_cfg  # the tiny engine runs on the CPU here
    assert _with(tiny_engine, cfg_batch="on").batch_cfg


def test_a_batch_gives_each_edit_its_own_outputs(tiny_engine) -> None:
    requests = [
        _request("make it blue", seed=1),
        _request("让天空变成紫色", seed=2, num_images=1, negative_prompt="dark"),
        _request("add a red hat to the cat, please", seed=3),
    ]
    batched = tiny_engine.edit_batch([BatchItem(r) for r in requests])
    for request, result in zip(requests, batched, strict=True):
        alone = tiny_engine.edit(request)
        assert not isinstance(result, Exception)
        assert [o.seed for o in result.outputs] == [o.seed for o in alone.outputs]
        assert max_diff(result.outputs[0].image, alone.outputs[0].image) <= TOLERANCE
        assert result.outputs[0].metadata["params"] == alone.outputs[0].metadata["params"]
    first = np.asarray(batched[0].outputs[0].image)  # type: ignore[union-attr]
    assert not np.array_equal(first, np.asarray(batched[2].outputs[0].image))  # type: ignore[union-attr]
    assert batched[0].stats["transformer_calls"] == 6  # type: ignore[union-attr]  # 3 steps x 2 branches, all rows at once


def test_several_outputs_of_one_edit_batch_too(tiny_engine) -> None:
    [result] = tiny_engine.edit_batch([BatchItem(_request(seed=10, num_images=2))])
    alone = tiny_engine.edit(_request(seed=11))
    assert not isinstance(result, Exception)
    assert [o.seed for o in result.outputs] == [10, 11]
    assert max_diff(result.outputs[1].image, alone.outputs[0].image) <= TOLERANCE


def test_cancelling_one_edit_leaves_the_others_running(tiny_engine) -> None:
    token = CancelToken()
    steps_seen: list[int] = []

    def cancel_after_first(step: int, total: int, elapsed: float) -> None:
        steps_seen.append(step)
        token.cancel()

    items = [
        BatchItem(_request(seed=1)),
        BatchItem(_request("cancel me", seed=2), on_step=cancel_after_first, cancel=token),
        BatchItem(_request(seed=3)),
    ]
    results = tiny_engine.edit_batch(items)
    assert isinstance(results[1], EditCancelled) and steps_seen == [1]
    for k in (0, 2):
        alone = tiny_engine.edit(items[k].request)
        assert max_diff(results[k].outputs[0].image, alone.outputs[0].image) <= TOLERANCE  # type: ignore[union-attr]


def test_a_refused_edit_fails_alone(tiny_engine) -> None:
    too_long = "x" * 1100  # 1100 byte tokens: past the 1024-token limit
    results = tiny_engine.edit_batch([BatchItem(_request(too_long)), BatchItem(_request(seed=4))])
    assert isinstance(results[0], InvalidInput) and results[0].field == "prompt"
    assert not isinstance(results[1], Exception) and results[1].outputs[0].seed == 4


def test_masked_edits_batch_and_keep_their_outside(tiny_engine) -> None:
    mask = Image.new("L", (128, 96), 0)
    mask.paste(255, (32, 24, 96, 72))
    image = noise_image(128, 96, 5)
    requests = [dataclasses.replace(_request(seed=s, image=image), mask=mask) for s in (1, 2)]
    results = tiny_engine.edit_batch([BatchItem(r) for r in requests])
    for request, result in zip(requests, results, strict=True):
        alone = tiny_engine.edit(request)
        assert max_diff(result.outputs[0].image, alone.outputs[0].image) <= TOLERANCE  # type: ignore[union-attr]
        out = np.asarray(result.outputs[0].image)  # type: ignore[union-attr]
        assert np.array_equal(out[:20], np.asarray(image)[:20])  # far outside the mask: the input, untouched


def test_edits_that_cannot_share_a_batch_are_refused_together(tiny_engine) -> None:
    with pytest.raises(ValueError, match="batch_key"):
        tiny_engine.edit_batch([BatchItem(_request(steps=2)), BatchItem(_request(steps=3))])


def test_identical_prompt_and_images_are_encoded_once(tiny_engine) -> None:
    engine = _with(tiny_engine, text_cache=4)
    first = engine.edit(_request(seed=1, image=noise_image(128, 96, 9)))
    misses = engine.encodings.misses
    again = engine.edit(_request(seed=1, image=noise_image(128, 96, 9)))
    assert engine.encodings.misses == misses and engine.encodings.hits >= 3  # prompt, negative, reference
    assert np.array_equal(np.asarray(first.outputs[0].image), np.asarray(again.outputs[0].image))
    engine.edit(_request("another prompt", seed=1, image=noise_image(128, 96, 9)))
    assert engine.encodings.misses == misses + 1  # the new prompt only: negative and image reused
    off = _with(tiny_engine, text_cache=0)
    off.edit(_request(seed=1))
    off.edit(_request(seed=1))
    assert off.encodings.hits == 0
