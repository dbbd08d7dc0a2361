"""``qedit lora inspect FILE [--model M]``: what a LoRA file adapts, and whether it fits a model.

Before spending a model load on a LoRA found online, a user wants to know what it is: its key
format, rank, alpha, which layers and blocks it touches, and whether those layers exist with those
shapes in the model they mean to use. Everything comes from the safetensors header (milliseconds,
whatever the file's size) plus the alpha scalars, read by their byte offsets; no weight tensor is
read, and torch is never imported.

Exit codes: 0 it fits the model, 1 it does not (the layers at fault are named), 2 not a LoRA file
(or a model whose transformer config cannot be found: the file is still described).
"""

from __future__ import annotations

import argparse
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qedit.errors import InvalidInput

EXIT_DOES_NOT_FIT = 1
FIELD = "FILE"
_NUMPY_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lora", help="inspect LoRA files", description="Look into LoRA files without loading a model.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ins = actions.add_parser(
        "inspect",
        help="format, rank, alpha, targets, blocks, size, sha256, and whether it fits a model",
        description="Describe a LoRA file from its safetensors header and say whether it fits a model. "
        "Exit code 0: it fits; 1: it does not; 2: not a LoRA file.",
    )
    ins.add_argument("file", metavar="FILE", help="a .safetensors LoRA (file or folder; a hub repo or URL also works)")
    ins.add_argument(
        "--model",
        metavar="REF",
        help="check the fit against this model: spec name, snapshot directory or hub id "
        "(default: $QEDIT_MODEL, else tiny)",
    )
    ins.add_argument("--no-sha256", action="store_true", help="skip hashing the file (seconds for a multi-GB file)")
    ins.add_argument("--json", action="store_true", help="machine-readable output")
    ins.set_defaults(func=run_inspect)


@dataclass
class Report:
    """What ``inspect`` found; ``as_json`` is the ``--json`` output."""

    file: str
    format: str
    size_bytes: int
    dtypes: tuple[str, ...]
    ranks: tuple[int, ...]
    alphas: tuple[float, ...] | None  # None: the file is not local, its alphas were not read
    targets: tuple[str, ...]
    blocks: tuple[int, ...]
    modules: list[dict[str, Any]]
    ignored: tuple[str, ...]
    metadata: dict[str, str]
    sha256: str | None = None
    model: str | None = None
    model_blocks: int | None = None
    problems: list[str] = field(default_factory=list)
    fit_error: str | None = None  # why the fit could not be checked (the model's config is out of reach)

    @property
    def fits(self) -> bool | None:
        return None if self.fit_error else not self.problems

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "format": self.format,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "dtypes": list(self.dtypes),
            "ranks": list(self.ranks),
            "alphas": list(self.alphas) if self.alphas is not None else None,
            "targets": list(self.targets),
            "blocks": list(self.blocks),
            "modules": self.modules,
            "ignored_keys": list(self.ignored),
            "metadata": self.metadata,
            "model": self.model,
            "fits": self.fits,
            "problems": self.problems,
            "fit_error": self.fit_error,
        }


def read_alphas(path: Path, keys: list[str]) -> dict[str, float]:
    """The scalar values of ``keys``, read at their byte offsets (the weights are never read).

    Not ``safetensors.safe_open(framework="numpy")``: numpy has no bfloat16, the dtype bf16 LoRA files
    store their alphas in. A key whose value cannot be read is left out (the report then says so).
    """
    import numpy as np

    values: dict[str, float] = {}
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        entries = json.loads(f.read(n))
        for key in keys:
            info = entries.get(key) or {}
            start, end = info.get("data_offsets", (0, 0))
            if not 0 < end - start <= 8:
                continue
            f.seek(8 + n + start)
            raw = f.read(end - start)
            dtype = info.get("dtype")
            try:
                if dtype == "BF16":
                    values[key] = float((np.frombuffer(raw[:2], "<u2").astype("<u4") << 16).view("<f4")[0])
                elif dtype in _NUMPY_DTYPES:
                    values[key] = float(np.frombuffer(raw, _NUMPY_DTYPES[dtype]).reshape(-1)[0])
            except (ValueError, IndexError):  # bytes that do not match the dtype: reported as not read
                continue
    return values


def inspect(given: str, model: str | None, *, sha256: bool = True) -> Report:
    """Describe the LoRA ``given`` names; with ``model``, the reasons it does not fit (if any)."""
    from qedit.loras.anatomy import analyse, fit_problems, lora_keys
    from qedit.loras.options import LoraOptions
    from qedit.loras.store import sha256_file

    source, header = LoraOptions.operator().store.header(given, FIELD)
    anatomy = analyse(header, given, FIELD)
    local = source.path if source.kind == "local" else None
    alpha_keys = {m.name: lora_keys(m.name, anatomy.format)[2] for m in anatomy.modules.values() if m.has_alpha}
    alpha_of: dict[str, float] = {}
    alphas: tuple[float, ...] | None = None
    if local is not None:
        read = read_alphas(local, sorted(k for k in header.tensors if k.endswith(".alpha")))
        alpha_of = {name: read[key] for name, key in alpha_keys.items() if key in read}
        alphas = tuple(sorted(set(read.values())))
    report = Report(
        file=str(local) if local is not None else given,
        format=anatomy.format,
        size_bytes=anatomy.size_bytes,
        dtypes=anatomy.dtypes,
        ranks=anatomy.ranks,
        alphas=alphas,
        targets=anatomy.targets,
        blocks=anatomy.blocks,
        modules=[
            {
                "name": m.name,
                "rank": m.rank,
                "in_features": m.in_features,
                "out_features": m.out_features,
                "alpha": alpha_of.get(m.name),
            }
            for m in anatomy.modules.values()
        ],
        ignored=anatomy.ignored,
        metadata=header.metadata,
        sha256=sha256_file(local) if local is not None and sha256 else None,
    )
    if model is not None:
        report.model = model
        try:
            config = model_config(model)
        except InvalidInput as e:
            report.fit_error = e.message
            return report
        report.model_blocks = int(config.get("num_layers", 0)) or None
        report.problems = fit_problems(anatomy, config)
    return report


def model_config(model: str) -> dict[str, Any]:
    """The transformer config of ``model``: from disk, else (tiny) writing the preset, else (hub) its one
    small config file from the hub."""
    from qedit.models.snapshot import local_snapshot, transformer_config
    from qedit.models.specs import SPECS

    config = transformer_config(local_snapshot(model))
    if config is None and model in SPECS and SPECS[model].tiny:
        from qedit.engine.tiny import ensure_tiny

        config = transformer_config(ensure_tiny(model))
    if config is None:
        hub_id = SPECS[model].hub_id if model in SPECS else model
        if hub_id and "/" in hub_id and not Path(model).expanduser().exists() and not model.startswith((".", "/")):
            config = _hub_config(hub_id)
    if config is None:
        raise InvalidInput(
            f"cannot read the transformer config of {model} (give a snapshot directory, a hub id or a spec name)",
            field="model",
        )
    return config


def _hub_config(hub_id: str) -> dict[str, Any] | None:
    from huggingface_hub import hf_hub_download

    try:
        return json.loads(Path(hf_hub_download(hub_id, "transformer/config.json")).read_text(encoding="utf-8"))
    except Exception as e:
        raise InvalidInput(f"cannot fetch {hub_id}'s transformer config ({type(e).__name__})", field="model") from None


def ranges(numbers: tuple[int, ...]) -> str:
    """(0, 1, 2, 5) -> ``0-2, 5``."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in spans)


def _alpha_line(report: Report) -> str:
    if report.alphas is None:
        return "not read (not a local file)"
    if not report.alphas:
        return "none (each module at scale 1)"
    shown = ", ".join(f"{a:g}" for a in report.alphas)
    if len(report.alphas) == 1 and len(report.ranks) == 1:
        return f"{shown} (modules scaled by alpha/rank = {report.alphas[0] / report.ranks[0]:g})"
    return f"{shown} (modules scaled by alpha/rank)"


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.2f} GiB"


def print_report(report: Report) -> None:
    rows = [
        ("file", report.file),
        ("format", report.format),
        ("size", human_size(report.size_bytes)),
    ]
    if report.sha256:
        rows.append(("sha256", report.sha256))
    of = f" of {report.model_blocks}" if report.model_blocks else ""
    rows += [
        ("dtypes", ", ".join(report.dtypes)),
        ("rank", ", ".join(str(r) for r in report.ranks)),
        ("alpha", _alpha_line(report)),
        ("modules", f"{len(report.modules)} layers"),
        ("targets", ", ".join(report.targets)),
        ("blocks", f"{ranges(report.blocks) or 'none'} ({len(report.blocks)}{of} blocks)"),
    ]
    if report.ignored:
        shown = ", ".join(report.ignored[:3]) + (", ..." if len(report.ignored) > 3 else "")
        rows.append(("ignored", f"{len(report.ignored)} keys diffusers does not load ({shown})"))
    if report.model is not None:
        rows.append(("model", report.model))
        if report.fit_error:
            rows.append(("fit", "unknown: the model's transformer config is out of reach"))
        elif report.fits:
            rows.append(("fit", "fits"))
        else:
            rows.append(("fit", f"does not fit: {len(report.problems)} layer(s)"))
            rows += [("", p) for p in report.problems[:10]]
            if len(report.problems) > 10:
                rows.append(("", f"... and {len(report.problems) - 10} more"))
    for name, value in rows:
        print(f"{name:9} {value}")


def run_inspect(args: argparse.Namespace) -> int:
    from qedit.models.snapshot import default_model

    report = inspect(args.file, args.model or default_model(), sha256=not args.no_sha256)
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        print_report(report)
    if report.fit_error:  # described, but the question asked (does it fit?) has no answer: exit 2
        raise InvalidInput(report.fit_error, field="model")
    return 0 if report.fits else EXIT_DOES_NOT_FIT
