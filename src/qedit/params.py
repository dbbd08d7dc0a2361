"""The engine's knobs, validated once, without torch.

``EditParams`` is the single typed description of an edit that every boundary maps onto: the CLI's
flags, each HTTP interface's schema and the Python API. It lives outside ``qedit.engine`` so that the
API layer and the task store can validate and persist it without importing torch.
"""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from qedit.errors import InvalidInput, quote
from qedit.loras.spec import MAX_LORAS, LoraSpec

SEED_MAX = 2_147_483_647
SIZE_MIN, SIZE_MAX = 256, 1536
STEPS_MIN, STEPS_MAX = 1, 100
CFG_MIN, CFG_MAX = 1.0, 20.0
NUM_MIN, NUM_MAX = 1, 4
MAX_PROMPT_CHARS = 8000  # a cheap bound before tokenisation; the token limit is the model spec's

_SIZE_RE = re.compile(r"^\s*(\d+)\s*[x*X×]\s*(\d+)\s*$")
_COLOUR_RE = re.compile(r"^(#[0-9a-fA-F]{6}|[a-zA-Z]+)$")


MAX_BOXES = 16  # the regions one instruction can name; a bound so a request cannot carry millions


class Box(BaseModel):
    """A region drawn on the model's input (pixels of the edited, i.e. last, image; x1/y1 exclusive)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    x0: int = Field(ge=0)
    y0: int = Field(ge=0)
    x1: int = Field(gt=0)
    y1: int = Field(gt=0)
    colour: str = Field(default="red", description="outline colour: a name (red, blue, ...) or #rrggbb")

    @model_validator(mode="after")
    def _not_empty(self) -> Box:
        if self.x1 <= self.x0 or self.y1 <= self.y0:
            raise ValueError(f"box {self.x0},{self.y0},{self.x1},{self.y1} is empty (need x1 > x0 and y1 > y0)")
        if not _COLOUR_RE.match(self.colour):
            raise ValueError(f"box colour {quote(self.colour)} is not a colour name or #rrggbb")
        return self

    @classmethod
    def parse(cls, text: str) -> Box:
        """``x0,y0,x1,y1[:colour]`` as the CLI's ``--box`` takes it."""
        coords, _, colour = text.partition(":")
        parts = coords.split(",")
        if len(parts) != 4 or not all(p.strip().lstrip("-").isdigit() for p in parts):
            raise InvalidInput(f"expected x0,y0,x1,y1[:colour], got {quote(text)}", field="box")
        x0, y0, x1, y1 = (int(p) for p in parts)
        return validate(cls, {"x0": x0, "y0": y0, "x1": x1, "y1": y1, "colour": colour or "red"}, "box")


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` or ``W*H`` (WaveSpeed's form) -> (width, height), each 256-1536."""
    m = _SIZE_RE.match(text)
    if not m:
        raise InvalidInput(f"expected WxH (e.g. 1024x768), got {quote(text)}", field="size")
    w, h = int(m.group(1)), int(m.group(2))
    for name, v in (("width", w), ("height", h)):
        if not SIZE_MIN <= v <= SIZE_MAX:
            raise InvalidInput(f"{name} must be {SIZE_MIN}-{SIZE_MAX}, got {v}", field="size")
    return w, h


Dimension = Annotated[int, Field(ge=SIZE_MIN, le=SIZE_MAX)]


class EditParams(BaseModel):
    """Everything about an edit except the pixels. ``None`` means "the model spec's default"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="the instruction")
    negative_prompt: str = Field(default=" ", max_length=MAX_PROMPT_CHARS)
    true_cfg_scale: float | None = Field(default=None, ge=CFG_MIN, le=CFG_MAX)
    num_inference_steps: int | None = Field(default=None, ge=STEPS_MIN, le=STEPS_MAX)
    seed: int = Field(default=-1, ge=-1, le=SEED_MAX, description="-1 = random; the seed used is reported")
    size: tuple[Dimension, Dimension] | None = Field(
        default=None, description="output (width, height); default: the input's exact size"
    )
    num_images: int = Field(default=1, ge=NUM_MIN, le=NUM_MAX)
    fit: Literal["exact", "reference"] = Field(
        default="exact", description="exact: no shift or zoom (pad, then undo); reference: diffusers' stretch"
    )
    # appearance editing (issue 3): masks, preservation, region boxes
    mask_grow: int = Field(default=0, ge=-256, le=256, description="px to grow (+) or shrink (-) the mask")
    mask_feather: int = Field(default=4, ge=0, le=128, description="px of soft band at the mask's edge")
    strength: float = Field(default=1.0, gt=0.0, le=1.0, description="how far masked areas may move")
    preserve: Literal["off", "auto"] = "off"
    preserve_threshold: float = Field(default=6.0, gt=0.0, le=100.0, description="CIELAB ΔE counted as change")
    boxes: tuple[Box, ...] = Field(
        default=(), max_length=MAX_BOXES, description=f"0-{MAX_BOXES} outlined regions drawn on the image"
    )
    box_mask: bool = False
    # adapters and few-step editing (issue 9)
    loras: tuple[LoraSpec, ...] = Field(default=(), max_length=MAX_LORAS, description="0-3 LoRAs {path, scale}")
    fast: Literal[4, 8] | None = Field(
        default=None, description="Lightning: 4 or 8 steps, true CFG off (needs the variant's Lightning LoRA)"
    )

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @field_validator("box_mask")
    @classmethod
    def _box_mask_needs_boxes(cls, v: bool, info: ValidationInfo) -> bool:
        """A field rule (``boxes`` is validated first), so every interface's error names ``box_mask``."""
        if v and not info.data.get("boxes"):
            raise ValueError("box_mask needs at least one box in boxes")
        return v

    @field_validator("fast")
    @classmethod
    def _fast_sets_steps_and_cfg(cls, v: int | None, info: ValidationInfo) -> int | None:
        """Lightning was distilled for its step count without CFG: other values are refused, not mixed."""
        if v is None:
            return v
        steps, cfg = info.data.get("num_inference_steps"), info.data.get("true_cfg_scale")
        if steps is not None and steps != v:
            raise ValueError(f"conflicts with num_inference_steps={steps} (fast={v} runs {v} steps; leave it unset)")
        if cfg is not None and cfg != 1.0:
            raise ValueError(f"conflicts with true_cfg_scale={cfg:g} (fast runs without true CFG; leave it unset)")
        return v


def output_seeds(seed: int, n: int) -> tuple[int, ...]:
    """Output *i* of an edit with seed *s* uses *s + i* (so any output can be re-run alone from its
    metadata); -1 draws *s* at random first."""
    base = seed if seed >= 0 else secrets.randbelow(SEED_MAX + 1)
    return tuple((base + i) % (SEED_MAX + 1) for i in range(n))


def validate(model: type[BaseModel], data: dict, prefix: str | None = None):  # type: ignore[no-untyped-def]
    """Build ``model`` from ``data``; turn pydantic's report into one ``InvalidInput`` line."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or (prefix or model.__name__)
        field = f"{prefix}.{loc}" if prefix and loc != prefix else loc
        value = err.get("input")
        shown = f" (got {quote(value)})" if not isinstance(value, dict) and value is not None else ""
        msg = err["msg"].removeprefix("Value error, ")
        raise InvalidInput(f"{msg}{shown}", field=field) from None
