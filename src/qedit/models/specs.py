"""The registry of model specs: each variant's defaults and the facts the stages need.

A spec is data, not code: the stages read the condition sizes, template and limits from it, so a
new checkpoint of the family is one entry here. Real variants follow diffusers' pipelines
(``pipeline_qwenimage_edit.py`` and ``_edit_plus.py``); the tiny presets share their layout but
work at small areas so that a CPU edit takes seconds (``small``: a wider transformer at 512x512,
so that ``qedit bench`` times a transformer-bound edit, like the real model's, on a CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

from qedit.errors import InvalidInput

SYSTEM_PROMPT = (
    "Describe the key features of the input image (color, shape, size, texture, objects, background), "
    "then explain how the user's text instruction should alter or modify the image. Generate a new image "
    "that meets the user's requirements while maintaining consistency with the original input where "
    "appropriate."
)
# The chat template both pipelines use; ``{}`` receives the vision tokens and the instruction.
PROMPT_TEMPLATE = (
    "<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
)
PROMPT_TEMPLATE_DROP = 64  # tokens of the system prefix removed from the encoder's output
VISION_TOKENS = "<|vision_start|><|image_pad|><|vision_end|>"

EDIT_CLASS = "QwenImageEditPipeline"
PLUS_CLASS = "QwenImageEditPlusPipeline"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    pipeline_class: str  # model_index.json _class_name
    description: str
    max_images: int  # reference images per edit
    default_steps: int
    default_cfg: float  # true_cfg_scale
    vae_area: int  # pixels of each reference at the VAE (and of the working output)
    condition_area: int | None  # pixels of each reference at the VL encoder; None = same image as the VAE's
    picture_labels: bool  # "Picture i: " before each image's vision tokens (plus variants)
    max_prompt_tokens: int  # instruction tokens accepted; longer is an error, never a silent cut
    lightning: str  # the family name in the Lightning LoRA files (``{lightning}-Lightning-8steps-...``)
    zero_cond_t: bool = False  # 2511: reference tokens modulated at t = 0
    hub_id: str | None = None
    tiny: bool = False

    @property
    def is_plus(self) -> bool:
        return self.pipeline_class == PLUS_CLASS

    def build_prompt(self, prompt: str, n_images: int) -> str:
        """The text the processor receives, exactly as the reference builds it."""
        if self.picture_labels:
            vision = "".join(f"Picture {i + 1}: {VISION_TOKENS}" for i in range(n_images))
        else:
            vision = VISION_TOKENS
        return PROMPT_TEMPLATE.format(vision + prompt)


MP = 1024 * 1024

SPECS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec(
            name="qwen-image-edit",
            lightning="Qwen-Image-Edit",
            pipeline_class=EDIT_CLASS,
            description="Qwen-Image-Edit (2025-08): one image",
            max_images=1,
            default_steps=50,
            default_cfg=4.0,
            vae_area=MP,
            condition_area=None,
            picture_labels=False,
            max_prompt_tokens=1024,
            hub_id="Qwen/Qwen-Image-Edit",
        ),
        ModelSpec(
            name="qwen-image-edit-2509",
            lightning="Qwen-Image-Edit-2509",
            pipeline_class=PLUS_CLASS,
            description="Qwen-Image-Edit-2509: 1-3 images (the Qwen team suggests 40 steps)",
            max_images=3,
            default_steps=40,
            default_cfg=4.0,
            vae_area=MP,
            condition_area=384 * 384,
            picture_labels=True,
            max_prompt_tokens=1024,
            hub_id="Qwen/Qwen-Image-Edit-2509",
        ),
        ModelSpec(
            name="qwen-image-edit-2511",
            lightning="Qwen-Image-Edit-2511",
            pipeline_class=PLUS_CLASS,
            description="Qwen-Image-Edit-2511: 1-3 images, references modulated as clean (zero_cond_t)",
            max_images=3,
            default_steps=40,
            default_cfg=4.0,
            vae_area=MP,
            condition_area=384 * 384,
            picture_labels=True,
            max_prompt_tokens=1024,
            zero_cond_t=True,
            hub_id="Qwen/Qwen-Image-Edit-2511",
        ),
        ModelSpec(
            name="tiny",
            lightning="Qwen-Image-Edit",
            pipeline_class=EDIT_CLASS,
            description="random tiny model of the Qwen-Image-Edit architecture (noise-like output; for tests)",
            max_images=1,
            default_steps=4,
            default_cfg=4.0,
            vae_area=128 * 128,
            condition_area=None,
            picture_labels=False,
            max_prompt_tokens=1024,
            tiny=True,
        ),
        ModelSpec(
            name="small",
            lightning="Qwen-Image-Edit",
            pipeline_class=EDIT_CLASS,
            description="random Qwen-Image-Edit architecture, transformer-bound at 512x512 on a CPU like the real "
            "one (noise-like output; for qedit bench)",
            max_images=1,
            default_steps=8,
            default_cfg=4.0,
            vae_area=512 * 512,
            condition_area=None,
            picture_labels=False,
            max_prompt_tokens=1024,
            tiny=True,
        ),
        ModelSpec(
            name="tiny-plus",
            lightning="Qwen-Image-Edit-2509",
            pipeline_class=PLUS_CLASS,
            description="random tiny model of the Qwen-Image-Edit-2509 architecture (1-3 images; for tests)",
            max_images=3,
            default_steps=4,
            default_cfg=4.0,
            vae_area=128 * 128,
            condition_area=56 * 56,
            picture_labels=True,
            max_prompt_tokens=1024,
            tiny=True,
        ),
    )
}


def get_spec(name: str) -> ModelSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise InvalidInput(f"unknown model spec {name!r}; known: {', '.join(SPECS)}", field="model") from None
