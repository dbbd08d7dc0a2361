"""Stage 6: the working-size image -> what the user gets: exact field of view and size, the
untouched pixels restored (mask or preserve), and the metadata that lets anyone re-run it."""

from __future__ import annotations

import json

from PIL import Image

from qedit import __version__
from qedit.engine import masks
from qedit.engine.geometry import Geometry, resize
from qedit.params import EditParams


def finish(
    working_image: Image.Image,
    geometry: Geometry,
    original: Image.Image,
    out_size: tuple[int, int],
    params: EditParams,
    edit_mask: masks.EditMask | None,
) -> Image.Image:
    """Back to the source's geometry, restore what must not change, then the requested size."""
    image = geometry.to_source(working_image)
    if edit_mask is not None:
        image = masks.composite(original, image, edit_mask)
    elif params.preserve == "auto":
        image, _ = masks.preserve_changes(original, image, params.preserve_threshold)
    return image if image.size == out_size else resize(image, out_size)


def metadata(
    params: EditParams,
    *,
    seed: int,
    steps: int,
    cfg: float,
    size: tuple[int, int],
    model: str,
    history: tuple[dict, ...] = (),
    parent: str | None = None,
) -> dict[str, str]:
    """Flat strings for the file's text chunks; ``params`` (JSON) re-runs the edit exactly."""
    resolved = params.model_copy(update={"seed": seed, "num_inference_steps": steps, "true_cfg_scale": cfg,
                                         "num_images": 1})  # fmt: skip
    step = {"model": model, **resolved.model_dump(mode="json")}
    meta = {
        "prompt": params.prompt,
        "negative_prompt": params.negative_prompt,
        "seed": str(seed),
        "steps": str(steps),
        "cfg": f"{cfg:g}",
        "size": f"{size[0]}x{size[1]}",
        "model": model,
        "engine": f"qedit {__version__}",
        "params": json.dumps(step, ensure_ascii=False),
        "chain": json.dumps([*history, step], ensure_ascii=False),
    }
    if parent:
        meta["parent"] = parent
    return meta


def history_from_metadata(meta: dict[str, str]) -> tuple[dict, ...]:
    """The edits an input image already went through (from a previous output's metadata)."""
    try:
        chain = json.loads(meta.get("chain", "[]"))
    except json.JSONDecodeError:
        return ()
    return tuple(step for step in chain if isinstance(step, dict)) if isinstance(chain, list) else ()
