"""``instant``: a dry-run engine for testing integrations, load tests and CI without weights or torch.

Select it with ``QEDIT_MODEL=instant`` (or ``qedit serve --model instant``). It honours the
``EditEngine`` contract exactly like the real engine: 1-3 images, seeds (``-1`` draws one and
reports it), ``num_images``, the output ``size``, step callbacks, cancellation between steps, and the
same metadata keys. The "edit" is deterministic and cheap: the edited (last) image, colour-inverted,
resized to the requested size, so a client can tell an output from its input.

To exercise failure paths, a prompt containing ``[fail]`` makes the edit raise after its first step.
``edit_batch`` runs compatible edits in lockstep and pays ``step_delay`` once per step for all of
them, so a batch of N takes the time of one edit, as a GPU batch does while the GPU has room: the
worker's request batching can be tested and sized without one.
``step_delay`` (``QEDIT_INSTANT_STEP_DELAY``) makes each step take that long, to see progress events,
cancel a running task, or size a queue.

LoRAs are resolved through the same store as the real engine's (allowed sources only; URLs are
downloaded into the cache) and recorded in the metadata as it records them (name, sha256, scale),
but not applied; ``fast`` runs its step count without CFG and is recorded (there is no model family
here, so no Lightning file is looked for).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image, ImageOps

from qedit.errors import EditCancelled
from qedit.loras.options import LoraOptions
from qedit.metadata import edit_metadata
from qedit.models.batching import BatchItem, request_key
from qedit.models.protocol import CancelToken, EditedImage, EditRequest, EditResult, StepCallback
from qedit.params import EditParams, output_seeds
from qedit.request_check import check_request

FAIL_MARKER = "[fail]"


class InstantEditFailed(RuntimeError):
    """The failure a ``[fail]`` prompt asks for."""


@dataclass
class _Run:
    """One item of a run: its request and settings, its outputs so far, or what ended it."""

    request: EditRequest
    on_step: StepCallback | None
    cancel: CancelToken | None
    steps: int
    cfg: float
    seeds: list[int]
    loras: tuple[dict, ...]
    outputs: list[EditedImage] = field(default_factory=list)
    error: Exception | None = None

    def step(self, k: int, step: int, elapsed: float) -> None:
        """Step ``step`` of output ``k`` done: report it; a ``[fail]`` prompt fails here."""
        if self.on_step is not None:
            self.on_step(k * self.steps + step + 1, self.steps * len(self.seeds), elapsed)
        if FAIL_MARKER in self.request.params.prompt:
            self.error = InstantEditFailed(f"the prompt asked the instant engine to fail ({FAIL_MARKER})")

    def result(self, start: float) -> EditResult | Exception:
        if self.error is None and self.cancel is not None and self.cancel.cancelled:
            self.error = EditCancelled()
        if self.error is not None:
            return self.error
        return EditResult(
            outputs=tuple(self.outputs), model=InstantEngine.model_id, timings={"denoise": time.perf_counter() - start}
        )


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
        (result,) = self._run([BatchItem(request, on_step, cancel)])
        if isinstance(result, Exception):
            raise result
        return result

    def edit_batch(self, items: Sequence[BatchItem]) -> list[EditResult | Exception]:
        """``BatchingEngine.edit_batch``: the items' steps in lockstep, each step's delay paid once.

        So a batch of N takes the time of one edit, as a GPU batch roughly does while it has room;
        each item's output is what ``edit`` gives it alone. An item's cancel or ``[fail]`` ends that
        item only; the others run on.
        """
        if len({request_key(item.request) for item in items}) > 1:
            raise ValueError("edit_batch needs edits with one batch_key")
        return self._run(items)

    def _run(self, items: Sequence[BatchItem]) -> list[EditResult | Exception]:
        start = time.perf_counter()
        runs = [self._begin(item) for item in items]
        live = [r for r in runs if isinstance(r, _Run)]
        n_outputs = len(live[0].seeds) if live else 0
        for k in range(n_outputs):
            for step in range(live[0].steps if live else 0):
                for run in live:
                    if run.cancel is not None and run.cancel.cancelled:
                        run.error = EditCancelled()
                live = [r for r in live if r.error is None]
                if not live:
                    break
                if self.step_delay:
                    time.sleep(self.step_delay)
                for run in live:
                    run.step(k, step, time.perf_counter() - start)
                live = [r for r in live if r.error is None]
            for run in live:
                run.outputs.append(self._output(run, k))
        return [r if isinstance(r, Exception) else r.result(start) for r in runs]

    def _begin(self, item: BatchItem) -> _Run | Exception:
        """An item's checks and resolved settings; the exception its own checks raise, if any."""
        request = item.request
        params = request.params
        try:
            check_request(
                params,
                [i.size for i in request.images],
                max_images=self.max_images,
                model=self.model_id,
                mask=request.mask,
            )
            loras = self._resolve_loras(params)
        except Exception as e:
            return e
        cfg = params.true_cfg_scale if params.true_cfg_scale is not None else (1.0 if params.fast else 4.0)
        return _Run(
            request=request,
            on_step=item.on_step,
            cancel=item.cancel,
            steps=params.fast or params.num_inference_steps or self.steps,
            cfg=cfg,
            seeds=output_seeds(params.seed, params.num_images),
            loras=loras,
        )

    def _output(self, run: _Run, k: int) -> EditedImage:
        request, seed = run.request, run.seeds[k]
        image = self._transform(request.images[-1], request.params.size)
        metadata = edit_metadata(
            request.params,
            seed=seed,
            steps=run.steps,
            cfg=run.cfg,
            size=image.size,
            model=self.model_id,
            history=request.history,
            parent=request.parent,
            loras=run.loras,
        )
        return EditedImage(image=image, seed=seed, metadata=metadata)

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
