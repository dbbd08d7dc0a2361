"""``Engine.edit``: the stages in order (the ``# N`` comments in ``Engine.edit``).

    1. plan        parameters -> defaults from the model spec, one seed per output; prompt lengths;
                   LoRAs resolved to files, the fast (Lightning) recipe, the adapters switched on
                   (``adapters``)
    2. inputs      the request checked against its images; boxes drawn on the model's input; the
                   edit mask (user mask or boxes)
    3. prepare     sizes and tensors (``preprocess``, with ``geometry``)
    4. encode      instruction + images through Qwen2.5-VL; references through the VAE, once per
                   call (``encode``); the edit mask at the latent grid
    5. denoise     per output: noise from its seed, schedule, the loop: CFG, mask, callbacks, cancel
                   (``latents``, ``denoise``)
    6. decode      VAE decode at the working size (``decode``)
    7. finish      exact geometry back, untouched pixels restored, output size (``postprocess``);
                   metadata

Stages 1 and 2 only fill in and check, and are methods here; stages 3-7 are modules with typed
inputs and outputs, whose docstrings carry the same numbers. This file only wires them.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from qedit import masks
from qedit.engine import loader
from qedit.engine.adapters import ActiveLora, Adapters
from qedit.engine.decode import decode
from qedit.engine.denoise import DenoiseInputs, LatentMask, denoise
from qedit.engine.encode import Conditioning, check_prompt_length, encode_conditioning, encode_reference
from qedit.engine.latents import make_scheduler, noise, pack, timesteps
from qedit.engine.loader import Components
from qedit.engine.postprocess import finish
from qedit.engine.preprocess import Prepared, prepare
from qedit.engine.timing import Stopwatch
from qedit.errors import InvalidInput
from qedit.loras import lightning
from qedit.loras.options import LoraOptions
from qedit.metadata import edit_metadata
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
        return encode_conditioning(self.components, prompt, negative, prepared.condition_images, cfg)

    def encode_references(self, prepared: Prepared) -> References:
        return References(tuple(pack(encode_reference(self.components, t)) for t in prepared.vae_images))

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

    def denoise_one(
        self,
        seed: int,
        plan: EditPlan,
        prepared: Prepared,
        conditioning: Conditioning,
        references: References,
        latent_mask: LatentMask | None,
        on_step: StepCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> torch.Tensor:
        c = self.components
        scheduler = make_scheduler(plan.scheduler_config or c.scheduler_config, plan.steps)
        start_noise = noise(seed, prepared.working, c.device, conditioning.positive.embeds.dtype)
        ts = timesteps(scheduler, plan.steps, start_noise.shape[1], c.device)
        latents = start_noise
        strength = plan.params.strength
        if strength < 1.0:
            t_start = int(max(plan.steps - min(plan.steps * strength, plan.steps), 0))
            if t_start >= plan.steps:
                raise InvalidInput(f"{strength} leaves no denoising step with {plan.steps} steps", field="strength")
            ts = ts[t_start:]
            kept = latent_mask.image_latents if latent_mask is not None else references.packed[-1]
            if kept.shape != start_noise.shape:
                raise InvalidInput("strength < 1 needs the output size to follow the edited image", field="strength")
            latents = scheduler.scale_noise(kept, ts[:1], start_noise)
        scheduler.set_begin_index(len(scheduler.timesteps) - len(ts))
        width, height = prepared.working
        img_shapes = [(1, height // 16, width // 16), *prepared.reference_shapes]
        inputs = DenoiseInputs(
            latents=latents,
            noise=start_noise,
            references=references.joined,
            img_shapes=img_shapes,
            timesteps=ts,
            cfg=plan.cfg,
            mask=latent_mask,
        )
        return denoise(c.transformer, scheduler, inputs, conditioning, on_step, cancel)

    # -- the whole edit ---------------------------------------------------------------------

    def edit(
        self, request: EditRequest, *, on_step: StepCallback | None = None, cancel: CancelToken | None = None
    ) -> EditResult:
        watch = Stopwatch()
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
        outputs = []
        n = len(plan.seeds)
        for k, seed in enumerate(plan.seeds):
            step_cb = None
            if on_step is not None:

                def step_cb(step: int, total: int, elapsed: float, k: int = k) -> None:
                    on_step(k * total + step, n * total, elapsed)

            latents = self.denoise_one(  # 5
                seed, plan, prepared, conditioning, references, latent_mask, step_cb, cancel
            )
            watch.lap("denoise")
            working_image = decode(self.components.vae, latents, prepared.working)  # 6
            watch.lap("decode")
            image = finish(  # 7
                working_image, prepared.geometry, request.images[-1], prepared.out_size, params, edit_mask
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
            )
            outputs.append(EditedImage(image=image, seed=seed, metadata=meta))
            watch.lap("postprocess")
        return EditResult(outputs=tuple(outputs), model=self.model_id, timings=watch.timings)
