"""``instant``: a dry-run engine for testing integrations, load tests and CI without weights or torch.

Select it with ``QEDIT_MODEL=instant`` (or ``qedit serve --model instant``). It honours the
``EditEngine`` contract exactly like the real engine: 1-3 images, seeds (``-1`` draws one and
reports it), ``num_images``, the output ``size``, step callbacks, cancellation between steps, and the
same metadata keys. The "edit" is deterministic and cheap: the edited (last) image, colour-inverted,
resized to the requested size, so a client can tell an output from its input.

To exercise failure paths, a prompt containing ``[fail]`` makes the edit raise after its first step.
``step_delay`` (``QEDIT_INSTANT_STEP_DELAY``) makes each step take that long, to see progress events,
cancel a running task, or size a queue.

LoRAs are resolved through the same store as the real engine's (allowed sources only; URLs are
downloaded into the cache) and recorded in the metadata as it records them (name, sha256, scale),
but not applied; ``fast`` runs its step count without CFG and is recorded (there is no model family
here, so no Lightning file is looked for).
"""

from __future__ import annotations

import time

from PIL import Image, ImageOps

from qedit.errors import EditCancelled
from qedit.loras.options import LoraOptions
from qedit.metadata import edit_metadata
from qedit.models.protocol import CancelToken, EditedImage, EditRequest, EditResult, StepCallback
from qedit.params import EditParams, output_seeds
from qedit.request_check import check_request

FAIL_MARKER = "[fail]"


class InstantEditFailed(RuntimeError):
    """The failure a ``[fail]`` prompt asks for."""


class InstantEngine:
    """The dry-run ``EditEngine``: no model, same interface, deterministic output."""

    model_id = "instant"

    def __init__(
        self, step_delay: float = 0.0, steps: int = 4, max_images: int = 3, loras: LoraOptions | None = None
    ) -> None:
        self.step_delay = step_delay
        self.steps = steps
        self._max_images = max_images
        self._loras = loras

    @property
    def lora_options(self) -> LoraOptions:
        """The service passes its own; alone (tests, scripts) the operator's defaults, as ``Engine``."""
        if self._loras is None:
            self._loras = LoraOptions.operator()
        return self._loras

    @property
    def max_images(self) -> int:
        return self._max_images

    def edit(
        self, request: EditRequest, *, on_step: StepCallback | None = None, cancel: CancelToken | None = None
    ) -> EditResult:
        params = request.params
        check_request(
            params, [i.size for i in request.images], max_images=self.max_images, model=self.model_id, mask=request.mask
        )
        loras = self._resolve_loras(params)
        steps = params.fast or params.num_inference_steps or self.steps
        cfg = params.true_cfg_scale if params.true_cfg_scale is not None else (1.0 if params.fast else 4.0)
        seeds = output_seeds(params.seed, params.num_images)
        total = steps * len(seeds)
        start = time.perf_counter()
        outputs = []
        for k, seed in enumerate(seeds):
            for step in range(steps):
                if cancel is not None and cancel.cancelled:
                    raise EditCancelled()
                if self.step_delay:
                    time.sleep(self.step_delay)
                if on_step is not None:
                    on_step(k * steps + step + 1, total, time.perf_counter() - start)
                if FAIL_MARKER in params.prompt:
                    raise InstantEditFailed(f"the prompt asked the instant engine to fail ({FAIL_MARKER})")
            image = self._transform(request.images[-1], params.size)
            outputs.append(
                EditedImage(
                    image=image,
                    seed=seed,
                    metadata=edit_metadata(
                        request.params,
                        seed=seed,
                        steps=steps,
                        cfg=cfg,
                        size=image.size,
                        model=self.model_id,
                        history=request.history,
                        parent=request.parent,
                        loras=loras,
                    ),
                )
            )
        if cancel is not None and cancel.cancelled:
            raise EditCancelled()
        return EditResult(outputs=tuple(outputs), model=self.model_id, timings={"denoise": time.perf_counter() - start})

    def _resolve_loras(self, params: EditParams) -> tuple[dict, ...]:
        """What the real engine records of each LoRA (``ActiveLora.record``), from the same store."""
        if not params.loras:
            return ()
        store = self.lora_options.store
        resolved = [store.resolve(spec.path, f"loras[{i}]") for i, spec in enumerate(params.loras)]
        return tuple(
            {"name": r.name, "sha256": r.sha256, "scale": spec.scale}
            for r, spec in zip(resolved, params.loras, strict=True)
        )

    @staticmethod
    def _transform(image: Image.Image, size: tuple[int, int] | None) -> Image.Image:
        out = ImageOps.invert(image.convert("RGB"))
        return out.resize(size, Image.Resampling.BILINEAR) if size and tuple(size) != out.size else out
