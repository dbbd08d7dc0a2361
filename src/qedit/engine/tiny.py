"""The tiny preset: a complete, random, deterministic snapshot of the real architecture.

No weights can be downloaded here, and tests must never fake a component with a mock, so qedit
writes its own Qwen-Image-Edit family member: the same classes as the real checkpoints (MMDiT
transformer, Qwen-Image VAE, Qwen2.5-VL with its vision tower, a byte-level Qwen2 tokenizer carrying
the real special tokens at their real ids, the Qwen2-VL processor, the flow-matching scheduler with
the real config), only narrow and shallow. It is written as a diffusers-layout snapshot and loaded
through the same loader as real weights, so every code path the real model takes runs in tests.
Outputs are noise-like: the weights are random.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from qedit.engine.hf import quiet_libraries
from qedit.engine.tiny_loras import write_tiny_loras
from qedit.errors import InvalidInput
from qedit.models.snapshot import cache_root
from qedit.models.specs import EDIT_CLASS, PLUS_CLASS, get_spec

VARIANTS = {"edit": ("tiny", EDIT_CLASS), "plus": ("tiny-plus", PLUS_CLASS), "small": ("small", EDIT_CLASS)}

# The real Qwen2/Qwen2.5-VL special tokens and their ids (vocabulary of 151,643 ordinary tokens).
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
FIRST_SPECIAL_ID = 151643
VOCAB_SIZE = 152064  # the real embedding table's rows (padded past the last special token)

# The real VAE's latent statistics (Qwen-Image VAE config), so un-normalisation is exercised as in
# the real model.
LATENTS_MEAN = [
    -0.7571,
    -0.7089,
    -0.9113,
    0.1075,
    -0.1745,
    0.9653,
    -0.1517,
    1.5508,
    0.4134,
    -0.0715,
    0.5517,
    -0.3632,
    -0.1922,
    -0.9497,
    0.2503,
    -0.2921,
]
LATENTS_STD = [
    2.8184,
    1.4541,
    2.3275,
    2.6558,
    1.2196,
    1.7708,
    2.6052,
    2.0743,
    3.2687,
    2.1526,
    2.8652,
    1.5579,
    1.6382,
    1.1253,
    2.8251,
    1.9160,
]

# The real scheduler config of Qwen-Image-Edit (dynamic exponential shift, terminal 0.02).
SCHEDULER_CONFIG = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}

HIDDEN = 32  # text hidden size = transformer joint_attention_dim = vision out_hidden_size

# The transformer of each variant. ``small`` is for ``qedit bench``: what it measures only means
# something for the real model if the transformer dominates the edit's time, as its 20B parameters
# do; so at 512x512 on a CPU its passes take >= ~80% of an 8-step edit while one pass stays around
# a second. Its head dimension and RoPE axes are the real model's (128 = 16 + 56 + 56). Its text
# encoder is ``tiny``'s and its VAE narrower still (base_dim 4: at 512x512 the VAE's full-resolution
# convolutions would otherwise cost seconds), with the real channel and scale factors.
TINY_TRANSFORMER = {"num_layers": 2, "attention_head_dim": 32, "num_attention_heads": 2, "axes_dims_rope": (8, 12, 12)}
TRANSFORMERS: dict[str, dict] = {
    "edit": TINY_TRANSFORMER,
    "plus": TINY_TRANSFORMER,
    "small": {"num_layers": 4, "attention_head_dim": 128, "num_attention_heads": 2, "axes_dims_rope": (16, 56, 56)},
}
VAE_BASE_DIMS: dict[str, int] = {"edit": 8, "plus": 8, "small": 4}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map, which byte-level BPE vocabularies use."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


def build_tokenizer():  # -> transformers.Qwen2Tokenizer
    """A byte-level Qwen2 tokenizer: 256 byte tokens, no merges, the real special tokens and ids."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import Qwen2Tokenizer

    vocab = {ch: b for b, ch in _bytes_to_unicode().items()}
    vocab.update({tok: FIRST_SPECIAL_ID + i for i, tok in enumerate(SPECIAL_TOKENS)})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return Qwen2Tokenizer(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        model_max_length=32768,
    )


def build_components(variant: str = "edit") -> dict:
    """The six components, each seeded so the snapshot is the same on every machine."""
    import torch
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    token_id = {t: FIRST_SPECIAL_ID + i for i, t in enumerate(SPECIAL_TOKENS)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformer = QwenImageTransformer2DModel(
            patch_size=2,
            in_channels=64,  # 16 latent channels x 2x2 packing, as the real model
            out_channels=16,
            joint_attention_dim=HIDDEN,
            guidance_embeds=False,
            zero_cond_t=False,
            # axes_dims_rope: frame, height, width; sums to the head dim like the real (16, 56, 56)
            **TRANSFORMERS[variant],
        )
        torch.manual_seed(1)
        vae = AutoencoderKLQwenImage(
            base_dim=VAE_BASE_DIMS[variant],
            z_dim=16,
            dim_mult=[1, 2, 4, 4],  # three 2x downsamplings: the real 8x spatial factor
            num_res_blocks=1,
            attn_scales=[],
            temperal_downsample=[False, True, True],
            dropout=0.0,
            latents_mean=LATENTS_MEAN,
            latents_std=LATENTS_STD,
        )
        torch.manual_seed(2)
        config = Qwen2_5_VLConfig(
            text_config={
                "hidden_size": HIDDEN,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
                "max_position_embeddings": 32768,
                "rope_theta": 1000000.0,
                "rope_scaling": {"type": "mrope", "rope_type": "default", "mrope_section": [2, 3, 3]},
                "vocab_size": VOCAB_SIZE,
                "tie_word_embeddings": True,
            },
            vision_config={
                "depth": 2,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_heads": 2,
                "out_hidden_size": HIDDEN,
                "patch_size": 14,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
                "window_size": 112,
                "fullatt_block_indexes": [1],
            },
            vocab_size=VOCAB_SIZE,
            image_token_id=token_id["<|image_pad|>"],
            video_token_id=token_id["<|video_pad|>"],
            vision_start_token_id=token_id["<|vision_start|>"],
            vision_end_token_id=token_id["<|vision_end|>"],
            tie_word_embeddings=True,
        )
        text_encoder = Qwen2_5_VLForConditionalGeneration(config).eval()
    tokenizer = build_tokenizer()
    image_processor = Qwen2VLImageProcessor(
        min_pixels=56 * 56,
        max_pixels=28 * 28 * 1280,
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    # transformers 5 requires a video processor in Qwen2VLProcessor even though edits never use it
    video_processor = Qwen2VLVideoProcessor()
    processor = Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor)
    scheduler = FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG)
    return {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "processor": processor,
        "scheduler": scheduler,
    }


def write_tiny_snapshot(directory: str | Path, variant: str = "edit", *, with_loras: bool = False) -> Path:
    """Write the snapshot atomically: build in a sibling temp dir, then rename into place.

    ``with_loras``: also sample LoRAs in each key format and the variant's Lightning files
    (``tiny_loras``), so ``--lora`` and ``--fast`` can be tried on it.
    """
    from diffusers import QwenImageEditPipeline, QwenImageEditPlusPipeline

    quiet_libraries()
    if variant not in VARIANTS:
        raise InvalidInput(f"unknown tiny variant {variant!r}; choose from {', '.join(VARIANTS)}", field="variant")
    spec_name, class_name = VARIANTS[variant]
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    pipeline_cls = QwenImageEditPlusPipeline if class_name == PLUS_CLASS else QwenImageEditPipeline
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        pipeline_cls(**build_components(variant)).save_pretrained(tmp, safe_serialization=True)
        index_path = tmp / "model_index.json"
        index = json.loads(index_path.read_text())
        index["_qedit_spec"] = spec_name  # keys starting with "_" are ignored by diffusers
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        if with_loras:
            write_tiny_loras(tmp, get_spec(spec_name).lightning)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def ensure_tiny(spec_name: str) -> Path:
    """The cached snapshot of a preset (``tiny``, ``tiny-plus``, ``small``), built once (seconds) on first use, with its
    sample LoRAs and Lightning files (added to a snapshot cached before they existed)."""
    variant = next(v for v, (name, _) in VARIANTS.items() if name == spec_name)
    path = cache_root() / "models" / spec_name
    if not (path / "model_index.json").is_file():
        write_tiny_snapshot(path, variant, with_loras=True)
    elif not (path / "lightning").is_dir():
        write_tiny_loras(path, get_spec(spec_name).lightning)
    return path
