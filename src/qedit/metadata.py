"""What every output carries so that it can be re-run, and the chain of edits behind it.

Torch-free and shared by the engine, the service's instant stand-in, the worker and the CLI, so that
every writer agrees on the keys and every reader of a chained input finds the same history.

``request_digest`` names a request (parameters as asked, inputs' bytes, model, pixel-changing engine
options) by one hash that a writer stores under ``REQUEST_KEY``, so a resumed run can tell an output
made by this very request from one made by another (``qedit batch``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

from qedit import __version__
from qedit.params import EditParams


def edit_metadata(
    params: EditParams,
    *,
    seed: int,
    steps: int,
    cfg: float,
    size: tuple[int, int],
    model: str,
    history: tuple[dict, ...] = (),
    parent: str | None = None,
    loras: tuple[dict, ...] = (),
    engine_options: dict[str, str] | None = None,
) -> dict[str, str]:
    """Flat strings for the file's text chunks; ``params`` (JSON) re-runs the edit exactly.

    ``loras`` are the adapters that ran, each ``{name, sha256, scale}`` (the Lightning LoRA of a
    ``fast`` edit among them), so a re-run can check it has the very same files. ``engine_options``
    are the engine's modes under which pixels differ from the reference's (quantisation, step
    caching: ``EngineOptions.changes_pixels``), so a result says how it was made.
    """
    # fast fixes steps and cfg itself: recording them too would make the params a conflict
    update = {"seed": seed, "num_images": 1}
    if params.fast is None:
        update |= {"num_inference_steps": steps, "true_cfg_scale": cfg}
    step = {"model": model, **params.model_copy(update=update).model_dump(mode="json")}
    link = {**step, "lora_files": list(loras)} if loras else step  # the chain also says which files ran
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
        "chain": json.dumps([*history, link], ensure_ascii=False),
    }
    if parent:
        meta["parent"] = parent
    if loras:
        meta["loras"] = json.dumps(list(loras), ensure_ascii=False)
    if params.fast is not None:
        meta["fast"] = str(params.fast)
    if engine_options:
        meta["engine_options"] = json.dumps(engine_options, ensure_ascii=False)
    return meta


def history_from_metadata(meta: dict[str, str]) -> tuple[dict, ...]:
    """The edits an input image already went through (from a previous output's metadata)."""
    try:
        chain = json.loads(meta.get("chain", "[]"))
    except (json.JSONDecodeError, TypeError):
        return ()
    return tuple(step for step in chain if isinstance(step, dict)) if isinstance(chain, list) else ()


REQUEST_KEY = "request"
"""The metadata key under which a writer records ``request_digest`` of the request an output answers."""


def request_digest(
    params: EditParams, inputs: Sequence[bytes], model: str, engine_options: Mapping[str, str] | None = None
) -> str:
    """sha256 (hex) of everything that decides an output: ``params`` as requested (a seed of -1 stays
    -1: a re-run of a random-seed request is the same request), each input file's bytes, the model's
    canonical id (``snapshot.canonical_model``) and the engine options that change pixels."""
    doc = {
        "params": params.model_dump(mode="json"),
        "inputs": [hashlib.sha256(data).hexdigest() for data in inputs],
        "model": model,
        "engine_options": dict(engine_options or {}),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
