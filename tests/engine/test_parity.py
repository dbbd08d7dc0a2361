"""Parity with the reference: diffusers' own pipelines, built from the same tiny snapshot with
diffusers' ``from_pretrained``, run at the reference's resolutions (1 MP output and VAE inputs,
384x384 VL inputs for the plus variants), same seed and parameters; the final images must agree
to within 1/255 (they agree exactly on CPU in fp32)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from qedit.engine.geometry import resize
from qedit.engine.pipeline import Engine
from tests.support.parity import TOLERANCE, max_diff, noise_image, reference_engine, run_both


def test_edit_v1_matches_diffusers(tiny_path: Path) -> None:
    from diffusers import QwenImageEditPipeline

    engine = reference_engine(tiny_path, None)
    pipe = QwenImageEditPipeline.from_pretrained(tiny_path, dtype=torch.float32)
    # 1184x896 is a fixed point of the reference's sizing: no resize on either side of the model
    image = noise_image(1184, 896, 0)
    ours, theirs = run_both(
        engine,
        pipe,
        [image],
        prompt="把招牌上的字改成“开业大吉”, keep the rest",
        negative=" ",
        cfg=4.0,
        steps=2,
        seed=7,
    )
    assert theirs.size == (1184, 896)
    assert max_diff(ours, theirs) <= TOLERANCE


# one image in the default run; two and three with -m slow, to keep the default run short
@pytest.mark.parametrize(
    "n_images", [1, pytest.param(2, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow)]
)
def test_edit_plus_matches_diffusers(tiny_plus_path: Path, n_images: int) -> None:
    from diffusers import QwenImageEditPlusPipeline

    engine = reference_engine(tiny_plus_path, 384 * 384)
    pipe = QwenImageEditPlusPipeline.from_pretrained(tiny_plus_path, dtype=torch.float32)
    sizes = [(300, 200), (200, 260), (1184, 896)][-n_images:]  # the last sets the output size
    images = [noise_image(w, h, i) for i, (w, h) in enumerate(sizes)]
    cfg = 1.0 if n_images == 1 else 2.5  # 1.0: the conditional branch only
    ours, theirs = run_both(
        engine, pipe, images, prompt="Put the hat of picture 1 on the cat", negative="blurry", cfg=cfg, steps=2, seed=3
    )
    assert max_diff(ours, theirs) <= TOLERANCE


@pytest.mark.slow  # the same pipeline as test_edit_v1_matches_diffusers, plus a resize
def test_edit_v1_resized_back_to_input_size(tiny_path: Path) -> None:
    """For an input that is not a fixed point, ours is the reference's output brought back to the input size."""
    from diffusers import QwenImageEditPipeline

    engine = reference_engine(tiny_path, None)
    pipe = QwenImageEditPipeline.from_pretrained(tiny_path, dtype=torch.float32)
    image = noise_image(1000, 700, 1)
    ours, theirs = run_both(engine, pipe, [image], prompt="make it blue", negative=" ", cfg=4.0, steps=2, seed=1)
    assert ours.size == (1000, 700)
    assert theirs.size != ours.size
    assert max_diff(ours, resize(theirs, ours.size)) <= TOLERANCE


@pytest.mark.slow  # the plus pipeline's parity stays in the default run; this adds zero_cond_t (suite < 10 min)
def test_2511_detected_and_matches_diffusers(tiny_plus_path: Path, tmp_path: Path) -> None:
    """A plus snapshot whose transformer says zero_cond_t is 2511, and runs as diffusers runs it."""
    from diffusers import QwenImageEditPlusPipeline

    snap = tmp_path / "edit-2511"
    shutil.copytree(tiny_plus_path, snap)
    index = json.loads((snap / "model_index.json").read_text())
    index.pop("_qedit_spec")
    (snap / "model_index.json").write_text(json.dumps(index))
    config = json.loads((snap / "transformer" / "config.json").read_text())
    config["zero_cond_t"] = True
    (snap / "transformer" / "config.json").write_text(json.dumps(config))

    engine = Engine.load(str(snap))
    assert engine.spec.name == "qwen-image-edit-2511"
    assert engine.components.transformer.config.zero_cond_t is True
    pipe = QwenImageEditPlusPipeline.from_pretrained(snap, dtype=torch.float32)
    images = [noise_image(1184, 896, 5)]
    ours, theirs = run_both(engine, pipe, images, prompt="turn the car around", negative=" ", cfg=4.0, steps=2, seed=11)
    assert max_diff(ours, theirs) <= TOLERANCE
