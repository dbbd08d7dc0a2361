"""``qedit memory [MODEL]``: the bytes each component needs in each mode, and which GPUs each
combination of ``--offload`` and ``--quantize`` fits, before anything is loaded.

Choosing memory flags by trial costs a 58 GB load per try; this reads only the files' headers
(``qedit.models.footprint``), or, for a spec name with no snapshot on this machine, the real
checkpoints' known sizes, so it answers in well under a second without a GPU or torch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from qedit.models.footprint import COMPONENTS, GPUS_GIB, LOAD_DTYPES, OFFLOAD_MODES, Footprint, GiB

MiB = 1024**2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "memory",
        help="bytes per component and peak GPU memory per --offload/--quantize, from the weights' headers",
    )
    p.add_argument("model", nargs="?", help="snapshot directory, spec name or hub id (default $QEDIT_MODEL or tiny)")
    p.add_argument("--gguf", dest="gguf_file", type=Path, metavar="FILE", help="also size this GGUF transformer file")
    p.add_argument(
        "--dtype",
        choices=tuple(LOAD_DTYPES),
        default="bf16",
        help="dtype the weights load in (default bf16, as on GPUs)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def footprint_of(model: str, dtype: str, gguf_file: Path | None) -> Footprint:
    """A snapshot's headers when it is on this machine (the tiny presets are written first), else a
    real spec's known sizes; anything else is one line naming the model."""
    from qedit.errors import InvalidInput, quote
    from qedit.models import footprint
    from qedit.models.snapshot import local_snapshot
    from qedit.models.specs import SPECS

    spec = SPECS.get(model)
    if spec is not None and spec.tiny:
        from qedit.engine.tiny import ensure_tiny

        return footprint.from_snapshot(ensure_tiny(model), model, dtype, gguf_file)
    snapshot = local_snapshot(model)
    if snapshot is not None:
        return footprint.from_snapshot(snapshot, model, dtype, gguf_file)
    if Path(model).expanduser().exists():
        raise InvalidInput(f"{model} is not a model snapshot (no model_index.json)", field="model")
    if spec is not None:
        return footprint.from_spec(model, dtype, gguf_file)
    raise InvalidInput(
        f"no snapshot {quote(model)} on this machine; give a snapshot directory or one of: {', '.join(SPECS)}",
        field="model",
    )


def _size(n: int | None, unit: int) -> str:
    return "-" if n is None else f"{n / unit:.2f}"


def render(fp: Footprint) -> str:
    """The two tables: weights per component and mode, then peaks and the cards they fit."""
    modes = fp.quantize_modes
    stored = sum(c.stored_bytes for c in fp.components.values())
    unit, unit_name = (GiB, "GiB") if stored >= GiB else (MiB, "MiB")  # the tiny presets weigh a few MiB
    where = f"headers of {fp.path}" if fp.source == "headers" else "known sizes of the real checkpoints"
    lines = [f"{fp.model}: {where}; weights load in {fp.dtype}"]
    lines += [f"note: {n}" for n in fp.notes]
    lines.append("")
    head = f"{'weights ' + unit_name:14}{'stored':>10}" + "".join(f"{m:>10}" for m in modes)
    lines.append(head)
    for name in COMPONENTS:
        c = fp.components[name]
        cells = "".join(f"{_size(c.bytes_in(m, fp.dtype_bytes), unit):>10}" for m in modes)
        lines.append(f"{name:14}{_size(c.stored_bytes, unit):>10}{cells}")
    total = "".join(f"{_size(sum(fp.weights(m).values()), unit):>10}" for m in modes)
    lines.append(f"{'total':14}{_size(stored, unit):>10}{total}")
    lines.append("")
    lines.append(
        f"peak GPU memory in GiB per --offload (rows) and --quantize (columns), with {fp.allowance / GiB:.0f} GiB "
        f"for activations at 1 MP; [the smallest of {'/'.join(map(str, GPUS_GIB))} GiB cards it fits]"
    )
    lines.append(f"{'offload':14}" + "".join(f"{m:>14}" for m in modes))
    for o in OFFLOAD_MODES:
        cells = []
        for m in modes:
            fits, peak = fp.fits(o, m), fp.peak(o, m)
            cells.append("refused" if peak is None else f"{_size(peak, GiB)} [{fits[0] if fits else '-'}]")
        lines.append(f"{o:14}" + "".join(f"{c:>14}" for c in cells))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from qedit.models.snapshot import default_model

    fp = footprint_of(args.model or default_model(), args.dtype, args.gguf_file)
    print(json.dumps(fp.as_json(), indent=2) if args.json else render(fp))
    return 0
