"""Which member of the family a snapshot is, from its ``model_index.json``: torch-free.

The API needs to know how many images the served model takes before it queues anything, and
``qedit models`` lists snapshots, without loading a model; the loader asks the same question
before it reads a weight. One answer, here. The same goes for what a LoRA must fit (the
transformer's ``config.json``) and whether ``fast`` can run (the variant's Lightning file): the API
checks both at submit, from the snapshot's files, when the snapshot is already on disk.

Whether a snapshot is whole (``check_files``: every component's config parses, every weights file's
header reads, every shard an index names exists) is answered here too, without torch, so that
``qedit models`` lists a broken snapshot as broken, with the same reason the loader would give.
And what a model is called in every output's metadata (``canonical_model``) is decided once: the
same snapshot named four ways (``snap``, ``./snap``, ``snap/``, ``/abs/snap``) is one model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from qedit.errors import ModelLoadError, QeditError, quote
from qedit.loras import lightning
from qedit.models.specs import EDIT_CLASS, PLUS_CLASS, SPECS, ModelSpec, get_spec


def read_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"missing file {file}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"corrupt file {file}: {e}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"corrupt file {file}: expected a JSON object")
    return data


def detect_spec(path: Path) -> ModelSpec:
    """Which member of the family a snapshot is, from its own files."""
    index = read_json(path / "model_index.json")
    if isinstance(index.get("_qedit_spec"), str):
        if index["_qedit_spec"] not in SPECS:
            raise ModelLoadError(
                f"{path / 'model_index.json'}: _qedit_spec {quote(index['_qedit_spec'])} is not a known spec "
                f"({', '.join(SPECS)})"
            )
        return get_spec(index["_qedit_spec"])
    cls = index.get("_class_name")
    if cls == EDIT_CLASS:
        return get_spec("qwen-image-edit")
    if cls == PLUS_CLASS:
        transformer = read_json(path / "transformer" / "config.json")
        return get_spec("qwen-image-edit-2511" if transformer.get("zero_cond_t") else "qwen-image-edit-2509")
    raise ModelLoadError(
        f"{path / 'model_index.json'}: _class_name {quote(cls)} is not a Qwen-Image-Edit pipeline "
        f"({EDIT_CLASS} or {PLUS_CLASS})"
    )


def is_family_index(index: dict[str, Any]) -> bool:
    """A ``model_index.json`` that claims to be a Qwen-Image-Edit snapshot (others are other pipelines)."""
    return isinstance(index.get("_qedit_spec"), str) or index.get("_class_name") in (EDIT_CLASS, PLUS_CLASS)


# folder -> files that must exist (any one of each tuple), checked before any weight is read
REQUIRED_FILES: dict[str, tuple[tuple[str, ...], ...]] = {
    "transformer": (
        ("config.json",),
        ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json"),
    ),
    "vae": (
        ("config.json",),
        ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json"),
    ),
    "text_encoder": (("config.json",), ("model.safetensors", "model.safetensors.index.json")),
    "tokenizer": (("tokenizer.json", "vocab.json"),),
    "processor": (("preprocessor_config.json", "processor_config.json"),),
    "scheduler": (("scheduler_config.json",),),
}


def check_files(path: Path) -> None:
    """Raise ``ModelLoadError`` naming the first missing or unreadable file of the snapshot at ``path``.

    Reads configs and weights headers only (no tensor data, no torch): what is missing, what does
    not parse, which shard an index names that is not there, which weights file is truncated.
    """
    read_json(path / "model_index.json")
    for folder, groups in REQUIRED_FILES.items():
        for names in groups:
            found = [path / folder / n for n in names if (path / folder / n).is_file()]
            if not found:
                raise ModelLoadError(f"missing file {path / folder / names[0]}")
            for f in found:
                if f.suffix == ".json":
                    data = read_json(f)
                    if f.name.endswith(".index.json"):
                        _check_shards(f, data)
        for weights in sorted((path / folder).glob("*.safetensors")):
            check_safetensors(weights)


def _check_shards(index: Path, data: dict[str, Any]) -> None:
    weight_map = data.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelLoadError(f"corrupt file {index}: no weight_map")
    for shard in sorted({str(v) for v in weight_map.values()}):
        if not (index.parent / shard).is_file():
            raise ModelLoadError(f"missing file {index.parent / shard} (a shard {index.name} names)")


def check_safetensors(file: Path) -> None:
    """Reads only the header (numpy framework: no torch); a truncated or foreign file fails with its name."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="numpy") as f:
            f.keys()
    except Exception as e:  # safetensors raises its own SafetensorError, OSError, ValueError
        raise ModelLoadError(f"corrupt weights file {file}: {e}") from None


def canonical_model(model: str) -> str:
    """The id a model reference is recorded under: a spec name or hub id as it is (a real spec's name
    becomes its hub id, what the loader fetches), a local snapshot directory as its resolved absolute
    path, so ``snap``, ``./snap/``, ``~/snap`` and a symlink to it are one model, and the id loads it again."""
    if model in SPECS:
        spec = SPECS[model]
        return model if spec.tiny or not spec.hub_id else spec.hub_id
    path = _local_dir(model)
    return str(path.resolve()) if path is not None else model


def _local_dir(model: str) -> Path | None:
    """``model`` as a snapshot directory on this machine, if it is one; a reference that cannot be a
    path at all (too long, a NUL byte: a client's typo, or a fuzzer's) is simply not one."""
    try:
        path = Path(model).expanduser()
        return path if path.is_dir() else None
    except (OSError, ValueError, RuntimeError):  # ENAMETOOLONG, embedded NUL, ~user that does not exist
        return None


def default_model() -> str:
    """$QEDIT_MODEL, else the tiny preset (so a fresh install runs without downloading 58 GB)."""
    return os.environ.get("QEDIT_MODEL", "tiny")


def spec_of(model: str) -> ModelSpec | None:
    """The spec of a model reference without loading it: a spec name, or a snapshot directory's own
    files; None for a hub id or a broken snapshot (the loader then reports the problem)."""
    if model in SPECS:
        return SPECS[model]
    path = _local_dir(model)
    if path is not None:
        try:
            return detect_spec(path)
        except ModelLoadError:
            return None
    return None


# -- a model's files on disk, without loading, writing or downloading anything -----------------------


def cache_root() -> Path:
    """``$QEDIT_CACHE``, else ``~/.cache/qedit``: where the tiny presets are written (``models/<name>``)."""
    return Path(os.environ.get("QEDIT_CACHE") or Path.home() / ".cache" / "qedit")


def local_snapshot(model: str) -> Path | None:
    """The snapshot directory ``model`` names, if it is on disk already; None otherwise.

    Mirrors ``qedit.engine.loader.locate``: the tiny presets live in the qedit cache, a directory is
    itself, a spec name or hub id is looked up in huggingface_hub's cache (no network).
    """
    path: Path | None
    if model in SPECS and SPECS[model].tiny:
        path = cache_root() / "models" / model
    elif Path(model).expanduser().is_dir():
        path = Path(model).expanduser()
    else:
        hub_id = SPECS[model].hub_id if model in SPECS else model
        if not hub_id or "/" not in hub_id or model.startswith((".", "/", "~")):
            return None
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(hub_id, "model_index.json")
        except Exception:  # a malformed id: the loader says what is wrong with it
            return None
        path = Path(cached).parent if isinstance(cached, str) else None
    return path if path is not None and (path / "model_index.json").is_file() else None


def transformer_config(snapshot: Path | None) -> dict[str, Any] | None:
    """The snapshot's ``transformer/config.json`` (the shapes a LoRA must fit); None if unreadable."""
    if snapshot is None:
        return None
    try:
        return read_json(snapshot / "transformer" / "config.json")
    except ModelLoadError:
        return None


def snapshot_name(model: str, snapshot: Path) -> str:
    """What ``lightning.fused_steps`` reads a fused snapshot's step count from, exactly as the loader
    builds it: a directory's own name, else the model id (a real spec's hub id) and the folder's name."""
    spec = SPECS.get(model)
    if not (spec is not None and spec.tiny) and Path(model).expanduser().is_dir():
        return snapshot.resolve().name
    model_id = spec.hub_id if spec is not None and not spec.tiny and spec.hub_id else model
    return f"{model_id} {snapshot.resolve().name}"


def check_fast(model: str, snapshot: Path, fast: int, lightning_dirs: tuple[Path, ...]) -> None:
    """``fast`` can run on ``model`` (whose snapshot is ``snapshot``): the Lightning file is where the
    engine will look for it, or the snapshot has that recipe fused in. A snapshot that cannot be read
    is left to the loader, whose message names the broken file."""
    try:
        spec = detect_spec(snapshot)
        index = read_json(snapshot / "model_index.json")
        scheduler = read_json(snapshot / "scheduler" / "scheduler_config.json")
    except QeditError:
        return
    fused = lightning.fused_steps(snapshot_name(model, snapshot), index, scheduler)
    lightning.recipe_file(model, spec.lightning, fast, fused, lightning.search_dirs(snapshot, lightning_dirs))
