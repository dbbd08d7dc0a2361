"""Which edits can share one denoising batch, and the engine's batch entry point.

A batch runs several edits' latents through each transformer call together (request batching in
the worker; ``qedit bench --batch``). Rows may differ in what only enters through the text or per
row: prompt, negative prompt, seed, boxes, mask and what happens after decoding. Everything that
shapes the latents or the schedule must be equal: the images' sizes (reference tokens), output
size and fit, steps, CFG, strength, LoRA set and fast mode, outputs per edit, and whether a mask
pins part of the image. ``batch_key`` is that rule, written once and torch-free, so the worker can
group queued tasks without loading anything.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from qedit.models.protocol import CancelToken, EditEngine, EditRequest, EditResult, StepCallback
from qedit.params import EditParams


def batch_key(params: EditParams, image_sizes: Sequence[tuple[int, int]], has_mask: bool) -> Hashable:
    """Equal keys: the edits can be denoised in one batch, each output as if it ran alone."""
    return (
        tuple(tuple(s) for s in image_sizes),
        params.size,
        params.fit,
        params.num_inference_steps,
        params.true_cfg_scale,
        params.strength,
        tuple((lora.path, lora.scale) for lora in params.loras),
        params.fast,
        params.num_images,
        has_mask or params.box_mask,
    )


def request_key(request: EditRequest) -> Hashable:
    return batch_key(request.params, [i.size for i in request.images], request.mask is not None)


@dataclass(frozen=True)
class BatchItem:
    """One edit of a batch with its own progress callback and cancel token."""

    request: EditRequest
    on_step: StepCallback | None = None
    cancel: CancelToken | None = None


@runtime_checkable
class BatchingEngine(EditEngine, Protocol):
    """An engine that can denoise compatible edits together.

    ``edit_batch`` returns one entry per item, in order: its ``EditResult``, or the exception that
    ended that item alone (``EditCancelled`` when its token was set, ``QeditError`` for a request
    its own checks refuse); the other items run on. Items must share ``request_key``; a mixed
    batch is a programming error (``ValueError``).
    """

    def edit_batch(self, items: Sequence[BatchItem]) -> list[EditResult | Exception]: ...
