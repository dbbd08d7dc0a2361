"""``Engine.edit`` and ``Engine.edit_batch``: the stages in order (the ``# N`` comments below).

    1. plan        parameters -> defaults from the model spec, one seed per output; prompt lengths;
                   LoRAs resolved to files, the fast (Lightning) recipe, the adapters switched on
                   (``adapters``)
    2. inputs      the request checked against its images; boxes drawn on the model's input; the
                   edit mask (user mask or boxes)
    3. prepare     sizes and tensors (``preprocess``, with ``geometry``)
    4. encode      instruction + images through Qwen2.5-VL; references through the VAE, once per
                   call and reused across calls for the same inputs (``encode``, ``reuse``); the
                   edit mask at the latent grid
    5. denoise     per output: noise from its seed, schedule, the loop: CFG (in one call or two),
                   mask, callbacks, cancel (``latents``, ``denoise``)
    6. decode      VAE decode at the working size (``decode``)
    7. finish      exact geometry back, untouched pixels restored, output size (``postprocess``);
                   metadata

Stages 1 and 2 only fill in and check, and are methods here; stages 3-7 are modules with typed
inputs and outputs, whose docstrings carry the same numbers. This file only wires them.

Stages 1-4 run per edit (``_stage``), 6-7 per output (``_finish``). Stage 5 differs: ``edit`` runs
an edit's outputs one after another, each a batch of one row, so every output is the reference's
to the bit; ``edit_batch`` (the worker's request batching) puts every output of several compatible
edits in one batch, equal to their one-by-one runs within float rounding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from qedit import masks
from qedit.engine import loader
from qedit.engine.adapters import ActiveLora, Adapters
from qedit.engine.decode import decode
from qedit.engine.denoise import Group, LatentMask, PassCount, Row, Schedule, denoise
from qedit.engine.encode import Conditioning, TextEmbedding, check_prompt_length, encode_reference, encode_text
from qedit.engine.latents import make_scheduler, noise, pack, timesteps
from qedit.engine.loader import Components
from qedit.engine.postprocess import finish
from qedit.engine.preprocess import Prepared, prepare
from qedit.engine.reuse import EncodingCache, images_digest, tensor_digest
from qedit.engine.speed import CacheCounts, cached_loop
from qedit.engine.timing import Stopwatch
from qedit.errors import EditCancelled, InvalidInput, QeditError
from qedit.loras import lightning
from qedit.loras.options import LoraOptions
from qedit.metadata import edit_metadata
from qedit.models.batching import BatchItem, request_key
from qedit.models.options import EngineOptions
from qedit.models.protocol import CancelToken, EditedImage, EditRequest, EditResult, StepCallback
from qedit.models.snapshot import default_model
from qedit.models.specs import ModelSpec
from qedit.params import EditParams, output_seeds
from qedit.request_check import check_request


@dataclasses.dataclass(frozen=True)
class EditPlan:
    """Stage 1's output: every default filled in, one seed per output, the adapters to run."""

    params: EditParams
    steps: int
    cfg: float
    seeds: tuple[int, ...]
    loras: tuple[ActiveLora, ...] = ()
    scheduler_config: dict | None = None  # None: the snapshot's own


@dataclasses.dataclass(frozen=True)
class References:
    """Stage 4's image half: the packed VAE latents of each reference, in order."""

    packed: tuple[torch.Tensor, ...]  # (1, M_i, 64) each

    @property
    def joined(self) -> torch.Tensor:
        return torch.cat(self.packed, dim=1)


class Engine:
    """A loaded model that edits. Thread-compatible: one edit at a time per instance."""

    def __init__(self, components: Components, loras: LoraOptions | None = None) -> None:
        self.components = components
        self.lora_options = loras or LoraOptions.operator()
        self.adapters = Adapters.of(
            components.transformer,
            max_loaded=self.lora_options.max_loaded,
            max_bytes=self.lora_options.max_loaded_bytes,
        )
        self.encodings = EncodingCache(components.options.text_cache)  # prompt+images encoded once (reuse)

    @classmethod
    def load(
        cls,
        model: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        spec: str | None = None,
        loras: LoraOptions | None = None,
        options: EngineOptions | None = None,
    ) -> Engine:
        components = loader.load(model or default_model(), device=device, dtype=dtype, spec=spec, options=options)
        return cls(components, loras)

    @property
    def spec(self) -> ModelSpec:
        return self.components.spec

    @property
    def model_id(self) -> str:
        return self.components.model_id

    @property
    def options(self) -> EngineOptions:
        return self.components.options

    @property
    def max_images(self) -> int:
        return self.spec.max_images

    @property
    def lightning_dirs(self) -> tuple:
        """Where ``fast`` looks for the variant's Lightning files: the snapshot's, then the configured."""
        return lightning.search_dirs(self.components.path, self.lora_options.lightning_dirs)

    # -- the stages -------------------------------------------------------------------------

    def plan(self, params: EditParams) -> EditPlan:
        """Defaults the user left to the model filled in from its spec; prompts past its limit refused."""
        check_prompt_length(self.components, params.prompt)
        check_prompt_length(self.components, params.negative_prompt, field="negative_prompt")
        seeds = output_seeds(params.seed, params.num_images)
        store = self.lora_options.store
        loras = [
            ActiveLora(store.resolve(spec.path, f"loras[{i}]"), spec.scale, f"loras[{i}]")
            for i, spec in enumerate(params.loras)
        ]
        steps = params.num_inference_steps or self.spec.default_steps
        cfg = params.true_cfg_scale if params.true_cfg_scale is not None else self.spec.default_cfg
        scheduler_config = None
        fused = self.components.lightning_steps
        if params.fast is not None or fused is not None:
            if params.fast is not None:
                file = lightning.recipe_file(
                    self.model_id, self.spec.lightning, params.fast, fused, self.lightning_dirs
                )
                if file is not None:
                    loras.insert(0, ActiveLora(store.trusted(file, "fast"), 1.0, "fast"))
            steps = params.fast or params.num_inference_steps or fused or steps
            cfg = params.true_cfg_scale if params.true_cfg_scale is not None else lightning.CFG
            scheduler_config = lightning.scheduler_config(self.components.scheduler_config)
        return EditPlan(
            params=params, steps=steps, cfg=cfg, seeds=seeds, loras=tuple(loras), scheduler_config=scheduler_config
        )

    def model_inputs(self, request: EditRequest) -> tuple[tuple[Image.Image, ...], masks.EditMask | None]:
        """The images the model sees (boxes drawn on the last) and the edit mask at its size.

        The request is checked first by ``check_request``, the rule the CLI and the API apply
        before queueing, so a caller of the engine alone is refused the same way.
        """
        params, images = request.params, request.images
        check_request(
            params,
            [image.size for image in images],
            max_images=self.max_images,
            model=self.model_id,
            mask=request.mask,
        )
        last = images[-1]
        if params.boxes:
            images = (*images[:-1], masks.draw_boxes(last, params.boxes))
        mask_image = request.mask
        if params.box_mask:
            mask_image = masks.boxes_mask(last.size, params.boxes)
        if mask_image is None:
            return images, None
        return images, masks.prepare_edit_mask(mask_image, last.size, params.mask_grow, params.mask_feather)

    def prepare(
        self, request: EditRequest, images: tuple[Image.Image, ...], working: tuple[int, int] | None = None
    ) -> Prepared:
        return prepare(self.spec, images, request.params.size, request.params.fit, working)

    def encode(self, prompt: str, negative: str, prepared: Prepared, cfg: float) -> Conditioning:
        """The instruction (and the negative, with CFG) with the condition images; reused when seen before."""
        images = prepared.condition_images
        digest = images_digest(images)

        def text(p: str) -> TextEmbedding:
            return self.encodings.get(("text", p, digest), lambda: encode_text(self.components, p, images))

        use_negative = cfg > 1.0 and negative is not None
        return Conditioning(positive=text(prompt), negative=text(negative) if use_negative else None)

    def encode_references(self, prepared: Prepared) -> References:
        def one(t: torch.Tensor) -> torch.Tensor:
            return self.encodings.get(("vae", tensor_digest(t)), lambda: pack(encode_reference(self.components, t)))

        return References(tuple(one(t) for t in prepared.vae_images))

    def latent_mask(self, edit_mask: masks.EditMask, prepared: Prepared, references: References) -> LatentMask:
        """The region that may change (mask grown and feathered), binarised at the latent grid."""
        c = self.components
        width, height = prepared.working
        region = Image.fromarray(((edit_mask.soft > 0) * 255).astype(np.uint8), mode="L")
        region = prepared.geometry.to_working(region)
        m = torch.from_numpy((np.asarray(region) >= 128).astype(np.float32)).view(1, 1, height, width)
        m = F.interpolate(m, size=(2 * (height // 16), 2 * (width // 16)))  # nearest, as the reference
        m = pack(m.unsqueeze(2).repeat(1, 16, 1, 1, 1)).to(c.device, c.dtype)
        image_latents = references.packed[-1]
        if image_latents.shape != m.shape:
            raise InvalidInput("a mask needs the output's working size to follow the edited image", field="mask")
        return LatentMask(mask=m, image_latents=image_latents)

    def schedule(self, plan: EditPlan, prepared: Prepared):  # -> (scheduler, Schedule)
        """A fresh scheduler set for this edit's steps and size, cut to ``strength``'s share of it."""
        c = self.components
        width, height = prepared.working
        scheduler = make_scheduler(plan.scheduler_config or c.scheduler_config, plan.steps)
        ts = timesteps(scheduler, plan.steps, (height // 16) * (width // 16), c.device)
        strength = plan.params.strength
        if strength < 1.0:
            t_start = int(max(plan.steps - min(plan.steps * strength, plan.steps), 0))
            if t_start >= plan.steps:
                raise InvalidInput(f"{strength} leaves no denoising step with {plan.steps} steps", field="strength")
            ts = ts[t_start:]
        scheduler.set_begin_index(len(scheduler.timesteps) - len(ts))
        img_shapes = [(1, height // 16, width // 16), *prepared.reference_shapes]
        return scheduler, Schedule(img_shapes=img_shapes, timesteps=ts, cfg=plan.cfg, batch_cfg=self.batch_cfg)

    def row(self, seed: int, edit: _Staged, scheduler, schedule: Schedule, group: int = 0) -> Row:
        """One output's start: noise from its seed, or (strength < 1) the kept image re-noised with it."""
        c, conditioning, latent_mask = self.components, edit.conditioning, edit.latent_mask
        start_noise = noise(seed, edit.prepared.working, c.device, conditioning.positive.embeds.dtype)
        latents = start_noise
        if edit.plan.params.strength < 1.0:
            kept = latent_mask.image_latents if latent_mask is not None else edit.references.packed[-1]
            if kept.shape != start_noise.shape:
                raise InvalidInput("strength < 1 needs the output size to follow the edited image", field="strength")
            latents = scheduler.scale_noise(kept, schedule.timesteps[:1], start_noise)
        return Row(
            latents=latents,
            noise=start_noise,
            references=edit.references.joined,
            positive=conditioning.positive,
            negative=conditioning.negative,
            mask=latent_mask,
            group=group,
        )

    @property
    def batch_cfg(self) -> bool:
        """Both CFG branches in one call: where asked, or (auto) on CUDA, where it is faster (docs/speed.md)."""
        mode = self.options.cfg_batch
        return mode == "on" or (mode == "auto" and self.components.device.type == "cuda")

    # -- the whole edit ---------------------------------------------------------------------

    def edit(
        self, request: EditRequest, *, on_step: StepCallback | None = None, cancel: CancelToken | None = None
    ) -> EditResult:
        """One edit; its outputs are denoised one after another, each exactly as the reference would."""
        result = self._run([BatchItem(request, on_step, cancel)], batched=False)[0]
        if isinstance(result, Exception):
            raise result
        return result

    def edit_batch(self, items: Sequence[BatchItem]) -> list[EditResult | Exception]:
        """Compatible edits (``request_key``) denoised together: every output of every edit is a row of
        one batch. Each item's outcome is its own: a refused or cancelled item leaves the others running."""
        keys = {request_key(item.request) for item in items}
        if len(keys) > 1:
            raise ValueError(f"edit_batch needs edits with one batch_key; got {len(keys)} different ones")
        return self._run(list(items), batched=True)

    def _run(self, items: list[BatchItem], *, batched: bool) -> list[EditResult | Exception]:
        watches = [Stopwatch() for _ in items]
        outcomes: list[EditResult | Exception | None] = [None] * len(items)
        staged: list[_Staged] = []
        for k, item in enumerate(items):  # 1-4 per edit; an edit refused here leaves the batch
            try:
                staged.append(self._stage(k, item, watches[k]))
            except (QeditError, EditCancelled) as e:
                outcomes[k] = e
        if staged:  # the adapters are the last staged edit's, which all share (batch_key)
            for edit, outputs in self._denoise(staged, batched):
                outcomes[edit.index] = self._finish(edit, outputs, watches[edit.index])
        return [o if o is not None else EditCancelled("cancelled") for o in outcomes]

    def _stage(self, index: int, item: BatchItem, watch: Stopwatch) -> _Staged:
        watch.restart()
        request = item.request
        params = request.params
        plan = self.plan(params)  # 1
        self.adapters.activate(plan.loras)
        images, edit_mask = self.model_inputs(request)  # 2
        prepared = self.prepare(request, images)  # 3
        watch.lap("preprocess")
        conditioning = self.encode(params.prompt, params.negative_prompt, prepared, plan.cfg)  # 4
        references = self.encode_references(prepared)
        latent_mask = self.latent_mask(edit_mask, prepared, references) if edit_mask is not None else None
        watch.lap("encode")
        return _Staged(index, item, plan, prepared, conditioning, references, edit_mask, latent_mask)

    def _denoise(self, staged: list[_Staged], batched: bool):  # -> Iterator[(edit, [(seed, latents | error, count)])]
        """Stage 5 for every output: one batch of all rows, or (``edit``) one row at a time."""
        first = staged[0]
        if batched:
            scheduler, schedule = self.schedule(first.plan, first.prepared)
            rows, owners = [], []
            for g, edit in enumerate(staged):
                for seed in edit.plan.seeds:
                    rows.append(self.row(seed, edit, scheduler, schedule, g))
                    owners.append((g, seed))
            groups = [Group(e.item.on_step, e.item.cancel) for e in staged]
            count = PassCount()
            with self._cached(schedule, rows) as cached:
                latents = denoise(self.components.transformer, scheduler, schedule, rows, groups, count)
            for g, edit in enumerate(staged):
                mine = [(seed, latents[r]) for r, (owner, seed) in enumerate(owners) if owner == g]
                yield edit, [(seed, out, count.calls, count.passes.get(g, 0), cached) for seed, out in mine]
            return
        edit = first  # one edit: outputs one after another, progress counted over all of them
        n = len(edit.plan.seeds)
        results = []
        for k, seed in enumerate(edit.plan.seeds):
            step_cb = None
            if edit.item.on_step is not None:
                outer = edit.item.on_step

                def step_cb(step: int, total: int, elapsed: float, k: int = k, outer=outer) -> None:
                    outer(k * total + step, n * total, elapsed)

            scheduler, schedule = self.schedule(edit.plan, edit.prepared)  # 5
            row = self.row(seed, edit, scheduler, schedule)
            count = PassCount()
            with self._cached(schedule, [row]) as cached:
                group = Group(step_cb, edit.item.cancel)
                out = denoise(self.components.transformer, scheduler, schedule, [row], [group], count)[0]
            results.append((seed, out, count.calls, count.passes.get(0, 0), cached))
            if isinstance(out, Exception):
                break
        yield edit, results

    def _cached(self, schedule: Schedule, rows: list[Row]):  # -> ContextManager[CacheCounts | None]
        """The step cache's state made fresh for one loop (cache-dit needs the loop's CFG shape)."""
        return cached_loop(
            self.components.transformer,
            len(schedule.timesteps),
            cfg=rows[0].negative is not None,
            batched_cfg=schedule.batch_cfg,
        )

    def _finish(self, edit: _Staged, outputs, watch: Stopwatch) -> EditResult | Exception:
        """Stages 6-7 for each output of one edit, and its metadata."""
        watch.lap("denoise")
        params, request, plan = edit.plan.params, edit.item.request, edit.plan
        images, stats = [], {"transformer_calls": 0, "transformer_passes": 0}
        cache = CacheCounts()
        for seed, latents, calls, passes, cached in outputs:
            stats["transformer_calls"] += calls
            stats["transformer_passes"] += passes
            if cached is not None:
                cache = cache + cached
            if isinstance(latents, Exception):
                return latents
            working_image = decode(self.components.vae, latents, edit.prepared.working)  # 6
            watch.lap("decode")
            image = finish(  # 7
                working_image,
                edit.prepared.geometry,
                request.images[-1],
                edit.prepared.out_size,
                params,
                edit.edit_mask,
            )
            meta = edit_metadata(
                params,
                seed=seed,
                steps=plan.steps,
                cfg=plan.cfg,
                size=image.size,
                model=self.model_id,
                history=request.history,
                parent=request.parent,
                loras=tuple(a.record() for a in plan.loras),
                engine_options=self.options.changes_pixels(),
            )
            images.append(EditedImage(image=image, seed=seed, metadata=meta))
            watch.lap("postprocess")
        stats["text_cache_hits"] = self.encodings.hits
        if self.options.cache != "none":
            stats["cached_passes"] = cache.cached
            stats |= cache.describe()
        return EditResult(outputs=tuple(images), model=self.model_id, timings=watch.timings, stats=stats)


@dataclasses.dataclass(frozen=True)
class _Staged:
    """An edit through stages 1-4, ready for the denoising batch."""

    index: int
    item: BatchItem
    plan: EditPlan
    prepared: Prepared
    conditioning: Conditioning
    references: References
    edit_mask: masks.EditMask | None
    latent_mask: LatentMask | None
