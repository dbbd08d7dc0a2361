"""diffusers' own pipeline on qedit's components: the baseline every bench figure is a ratio to.

The reference is ``QwenImageEditPipeline`` / ``QwenImageEditPlusPipeline`` exactly as diffusers
ships it, built from the very module objects qedit's engine loaded (one copy of the weights, the
same kernels), unless the engine options change the transformer (quantised weights, cache hooks,
compiled blocks, offload hooks): then the reference gets its own plain copy, loaded by the same
loader, because it must run as diffusers runs it.

Two things are adapted from outside, without touching diffusers' code:

- areas: the reference hard-codes 1 MP for its VAE inputs and output (and 384x384 for the plus
  variants' VL inputs); its module-level ``calculate_dimensions`` is wrapped for the duration of a
  call so that those areas become the spec's, which is the identity for the real models and makes
  the small presets run at their own areas on both sides;
- timing: ``encode_prompt``, ``prepare_latents`` (the VAE encode of the input) and ``vae.decode``
  are wrapped on the instance, and the step callback stamps each step's end.
"""

from __future__ import annotations

import functools
import itertools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from qedit.engine.loader import Components
from qedit.models.options import EngineOptions
from qedit.models.specs import MP, ModelSpec

REFERENCE_VL_AREA = 384 * 384  # the plus pipelines' CONDITION_IMAGE_SIZE


def own_copy_reason(options: EngineOptions) -> str | None:
    """Why the reference cannot run on qedit's components under ``options``; None when it can."""
    reasons = []
    if options.quantize != "none":
        reasons.append(f"quantize={options.quantize} changes the transformer's weights")
    if options.cache != "none":
        reasons.append(f"cache={options.cache} hooks the transformer")
    if options.compile:
        reasons.append("compile replaces the transformer's blocks")
    if options.offload != "none":
        reasons.append(f"offload={options.offload} hooks the weights")
    return "; ".join(reasons) or None


def build_pipeline(components: Components):  # -> diffusers.DiffusionPipeline
    """The reference pipeline of the spec's class on these components, a scheduler from their config."""
    from diffusers import FlowMatchEulerDiscreteScheduler, QwenImageEditPipeline, QwenImageEditPlusPipeline

    cls = QwenImageEditPlusPipeline if components.spec.is_plus else QwenImageEditPipeline
    pipe = cls(
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(components.scheduler_config),
        vae=components.vae,
        text_encoder=components.text_encoder,
        tokenizer=components.processor.tokenizer,
        processor=components.processor,
        transformer=components.transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@contextmanager
def spec_areas(pipe: Any, spec: ModelSpec) -> Iterator[None]:
    """The reference's fixed areas replaced by the spec's while the block runs."""
    module = sys.modules[type(pipe).__module__]
    original = module.calculate_dimensions
    areas = {MP: spec.vae_area}
    if spec.condition_area is not None:
        areas[REFERENCE_VL_AREA] = spec.condition_area

    def calculate_dimensions(target_area: int, ratio: float) -> Any:  # diffusers' own tuple
        return original(areas.get(target_area, target_area), ratio)

    module.calculate_dimensions = calculate_dimensions
    try:
        yield
    finally:
        module.calculate_dimensions = original


@dataclass
class ReferenceTimes:
    encode: float = 0.0  # prompt encodes (VL) + the input's VAE encode
    decode: float = 0.0
    denoise_start: float | None = None
    step_ends: list[float] = field(default_factory=list)

    @property
    def denoise(self) -> float:
        if self.denoise_start is None or not self.step_ends:
            return 0.0
        return self.step_ends[-1] - self.denoise_start

    @property
    def steps(self) -> list[float]:
        if self.denoise_start is None:
            return []
        marks = [self.denoise_start, *self.step_ends]
        return [b - a for a, b in itertools.pairwise(marks)]


def _timed(fn: Callable, clock: Callable[[], float], add: Callable[[float, float], None]) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = clock()
        out = fn(*args, **kwargs)
        add(start, clock())
        return out

    return wrapper


@contextmanager
def _instrumented(pipe: Any, clock: Callable[[], float], times: ReferenceTimes) -> Iterator[None]:
    def encode(start: float, end: float) -> None:
        times.encode += end - start

    def latents_ready(start: float, end: float) -> None:
        times.encode += end - start
        times.denoise_start = end

    def decode(start: float, end: float) -> None:
        times.decode += end - start

    pipe.encode_prompt = _timed(pipe.encode_prompt, clock, encode)
    pipe.prepare_latents = _timed(pipe.prepare_latents, clock, latents_ready)
    pipe.vae.decode = _timed(pipe.vae.decode, clock, decode)
    try:
        yield
    finally:
        del pipe.encode_prompt
        del pipe.prepare_latents
        del pipe.vae.decode


def run_reference(
    pipe: Any,
    spec: ModelSpec,
    images: list[Image.Image],
    *,
    prompt: str,
    negative: str,
    steps: int,
    cfg: float,
    seed: int,
    clock: Callable[[], float],
) -> tuple[Image.Image, ReferenceTimes]:
    """One edit through the reference at the spec's areas; its image and stage times."""
    times = ReferenceTimes()

    def on_step_end(_pipe: Any, step: int, timestep: Any, kwargs: dict) -> dict:
        times.step_ends.append(clock())
        return {}

    with spec_areas(pipe, spec), _instrumented(pipe, clock, times):
        image = pipe(
            image=images if spec.is_plus else images[0],
            prompt=prompt,
            negative_prompt=negative,
            true_cfg_scale=cfg,
            num_inference_steps=steps,
            generator=torch.Generator("cpu").manual_seed(seed),  # qedit draws its noise on the CPU too
            callback_on_step_end=on_step_end,
        ).images[0]
    return image, times
