"""The bench's figures, once as JSON for machines and once as a side-by-side table for people.

``summary`` is the only place the figures are derived (medians over the runs, ratios, shares);
the table is printed from it, so ``--json`` and the text can never disagree. Every ratio is
qedit / reference: below 1 means qedit takes less (time, bytes, passes, memory).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from qedit.bench.runner import STAGES, TOLERANCE, BenchResult, Run, Side, median, spread
from qedit.models.options import EngineOptions

MIB = 1024 * 1024
STEP_ROWS = 16  # more steps than this: the first and last few rows, every step in the JSON


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _run(run: Run) -> dict[str, Any]:
    """One run's figures (its image left out)."""
    out = {f.name: getattr(run, f.name) for f in dataclasses.fields(run) if f.name != "image"}
    out["memory"] = dataclasses.asdict(run.memory)
    return out


def _side(side: Side) -> dict[str, Any]:
    runs = side.runs
    total = median([r.total for r in runs])
    transformer = median([r.transformer_seconds for r in runs])
    n_steps = min((len(r.steps) for r in runs), default=0)
    last: Run | None = runs[-1] if runs else None
    return {
        "total": total,
        "best_total": min((r.total for r in runs), default=None),
        "spread": spread([r.total for r in runs]),  # (max - min) / median of the runs' totals
        "stages": {s: median([r.stages[s] for r in runs]) for s in STAGES},
        "steps": [median([r.steps[i] for r in runs]) for i in range(n_steps)],
        "step_median": median([x for r in runs for x in r.steps]),  # robust to bursts of load on the machine
        "transformer_seconds": transformer,
        "transformer_share": transformer / total if total else None,
        "cpu_busy": min((r.cpu_busy for r in runs if r.cpu_busy is not None), default=None),  # the worst run
        "transformer_calls": last.calls if last else 0,
        "transformer_passes": last.passes if last else 0,
        "computed_passes": last.computed_passes if last else None,
        "peak_memory": {
            "kind": last.memory.kind if last else None,
            "peak_bytes": max(r.memory.peak for r in runs) if runs else None,
            "added_bytes": max(r.memory.added for r in runs) if runs else None,
        },
        "transformer_bytes": side.transformer_bytes,
        "engine_stats": last.engine_stats if last else {},
        "runs": [_run(r) for r in runs],
    }


def summary(result: BenchResult) -> dict[str, Any]:
    """Everything the bench measured, JSON-able."""
    c = result.config
    q = _side(result.qedit)
    ref = _side(result.reference) if result.reference is not None and result.reference.runs else None
    out: dict[str, Any] = {
        "model": result.model_id,
        "spec": result.spec,
        "device": result.device,
        "dtype": result.dtype,
        "options": c.options.describe(),
        "input_size": list(result.input_size),
        "working_size": list(result.working_size),
        "steps": result.steps,
        "cfg": result.cfg,
        "seed": c.seed,
        "repeat": c.repeat,
        "load_seconds": result.load_seconds,
        "reference_mode": result.reference_mode,
        "qedit": q,
        "reference": ref,
        "ratios": None,
        "max_pixel_diff": result.max_diff,
        "tolerance": TOLERANCE,
        "within_tolerance": None if result.max_diff is None else result.max_diff <= TOLERANCE,
        "batch": None,
        "notes": result.notes,
    }
    if ref is not None:
        out["ratios"] = {
            "time": _ratio(q["total"], ref["total"]),
            "time_best": _ratio(q["best_total"], ref["best_total"]),  # fastest run of each: least disturbed
            **{s: _ratio(q["stages"][s], ref["stages"][s]) for s in STAGES},
            "step": _ratio(q["step_median"], ref["step_median"]),
            "transformer_seconds": _ratio(q["transformer_seconds"], ref["transformer_seconds"]),
            "transformer_passes": _ratio(q["transformer_passes"], ref["transformer_passes"]),
            "computed_passes": _ratio(q["computed_passes"], ref["computed_passes"]),
            "transformer_bytes": _ratio(q["transformer_bytes"], ref["transformer_bytes"]),
            "peak_memory": _ratio(q["peak_memory"]["peak_bytes"], ref["peak_memory"]["peak_bytes"]),
        }
        out["speedup"] = _ratio(ref["total"], q["total"])
    b = result.batch
    if b is not None:
        batch: dict[str, Any] = dataclasses.asdict(b)
        if b.sequential and b.batched:
            seq, bat = median(b.sequential), median(b.batched)
            batch.update(
                sequential_images_per_s=b.n / seq,
                batched_images_per_s=b.n / bat,
                throughput_ratio=seq / bat,
            )
        out["batch"] = batch
    return out


# -- text -----------------------------------------------------------------------------------------


def _num(v: float | None, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def _percent(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def _mib(v: float | None) -> float | None:
    return None if v is None else v / MIB


def _step_indices(n: int) -> list[int | None]:
    """Every step, or for long runs the first and last ones (None: the elided middle)."""
    if n <= STEP_ROWS:
        return list(range(n))
    return [0, 1, 2, None, n - 2, n - 1]


class _Table:
    def __init__(self, has_ref: bool) -> None:
        self.has_ref = has_ref
        self.lines = [self._line("", "qedit", "reference", "qedit/ref")]

    def _line(self, label: str, ours: str, theirs: str, ratio: str) -> str:
        line = f"  {label:<30}{ours:>12}"
        if self.has_ref:
            line += f"{theirs:>12}{ratio:>12}"
        return line.rstrip()

    def row(
        self, label: str, ours: str, theirs: str = "-", ratio: float | None = None, show_ratio: bool = True
    ) -> None:
        self.lines.append(self._line(label, ours, theirs, _num(ratio, ".2f") if show_ratio else ""))


def _header(s: dict[str, Any]) -> list[str]:
    w, h = s["input_size"]
    ww, wh = s["working_size"]
    defaults = EngineOptions().describe()
    changed = [f"{k}={v}" for k, v in s["options"].items() if v != defaults.get(k)]
    lines = [
        f"qedit bench: {s['model']} ({s['spec']}) on {s['device']}, {s['dtype']}; {s['steps']} steps, "
        f"cfg {s['cfg']:g}, seed {s['seed']}; input {w}x{h} -> working {ww}x{wh} (the spec's area, both sides)",
        f"options: {', '.join(changed) or 'none (the reference behaviour)'}; {s['repeat']} run(s) "
        + ("per side, interleaved" if s["reference"] is not None else "of qedit only")
        + ", after an uncounted warm-up; medians below",
    ]
    if s["reference"] is not None:
        lines.append(f"reference: {s['reference_mode']}")
    return lines


def _table(s: dict[str, Any]) -> list[str]:
    q, ref = s["qedit"], s["reference"]
    has_ref = ref is not None
    rq, r = ref or {}, s["ratios"] or {}
    t = _Table(has_ref)

    def both(label: str, get: Any, ratio: float | None = None, fmt: str = ".3f", show_ratio: bool = True) -> None:
        t.row(label, _num(get(q), fmt), _num(get(rq), fmt) if has_ref else "-", ratio, show_ratio)

    for stage in STAGES:
        both(f"{stage} (s)", lambda side, stage=stage: side["stages"][stage], r.get(stage))
        if stage == "denoise":
            steps_q, steps_r = q["steps"], rq.get("steps") or []
            for i in _step_indices(len(steps_q)):
                if i is None:
                    t.lines.append("      ...")
                    continue
                theirs = steps_r[i] if i < len(steps_r) else None
                t.row(f"  step {i + 1}", _num(steps_q[i]), _num(theirs), _ratio(steps_q[i], theirs))
    both("total (s)", lambda side: side["total"], r.get("time"))
    both("in the transformer (s)", lambda side: side["transformer_seconds"], r.get("transformer_seconds"))
    share = _percent(q["transformer_share"]), _percent(rq.get("transformer_share"))
    t.row("transformer share of total", *share, show_ratio=False)
    if q["cpu_busy"] is not None:
        busy = _percent(q["cpu_busy"]), _percent(rq.get("cpu_busy"))
        t.row("CPU got, worst run", *busy, show_ratio=False)
    both("transformer calls", lambda side: side["transformer_calls"], fmt="d", show_ratio=False)
    both("transformer passes", lambda side: side["transformer_passes"], r.get("transformer_passes"), "d")
    both("  blocks run, in passes", lambda side: side["computed_passes"], r.get("computed_passes"), ".1f")
    cached = q["engine_stats"].get("cached_passes")
    if cached is not None:
        t.row("  cached passes (engine)", str(cached), show_ratio=False)
    kind = "peak RSS" if q["peak_memory"]["kind"] == "rss" else "peak CUDA allocated"
    both(f"{kind} (MiB)", lambda side: _mib(side["peak_memory"]["peak_bytes"]), r.get("peak_memory"), ".0f")
    both(
        "  above the run's start (MiB)",
        lambda side: _mib(side["peak_memory"]["added_bytes"]),
        fmt=".0f",
        show_ratio=False,
    )
    both("transformer weights (MiB)", lambda side: _mib(side["transformer_bytes"]), r.get("transformer_bytes"), ".2f")
    return t.lines


def _verdicts(s: dict[str, Any]) -> list[str]:
    lines = []
    if s["reference"] is None:
        lines.append("reference: not run (--no-reference)")
    else:
        verdict = "same output" if s["within_tolerance"] else "DIFFERENT output"
        lines.append(
            f"max pixel difference to the reference: {s['max_pixel_diff']} levels (tolerance {s['tolerance']}): "
            f"{verdict}"
        )
        r, speedup = s["ratios"], s["speedup"]
        how = f"{speedup:.2f}x faster than" if speedup >= 1 else f"{1 / speedup:.2f}x slower than"
        lines.append(
            f"end to end: qedit is {how} the reference (time ratio qedit/reference {r['time']:.3f} of the medians, "
            f"{r['time_best']:.3f} of the fastest runs; denoise {_num(r['denoise'])}; median step {_num(r['step'])}); "
            "runs vary by "
            f"{s['qedit']['spread']:.0%} (qedit) and {s['reference']['spread']:.0%} (reference)"
        )
    b = s["batch"]
    if b is not None:
        head = f"batch of {b['n']} (seeds and prompts differ)"
        if b["skipped"] or b["error"]:
            lines.append(f"{head}: {b['skipped'] or b['error']}")
        else:
            lines.append(
                f"{head}: {median(b['sequential']):.3f} s as {b['n']} edits ({b['sequential_images_per_s']:.3f} "
                f"img/s), {median(b['batched']):.3f} s in one edit_batch ({b['batched_images_per_s']:.3f} img/s): "
                f"throughput ratio batched/sequential {b['throughput_ratio']:.2f}; transformer calls "
                f"{b['sequential_calls']} -> {b['batched_calls']}; max difference batched vs one by one: "
                f"{b['max_diff']} levels"
            )
    lines.extend(f"note: {note}" for note in s["notes"])
    return lines


def format_text(s: dict[str, Any]) -> str:
    """The summary as a side-by-side table with the verdicts under it."""
    return "\n".join([*_header(s), "", *_table(s), "", *_verdicts(s)])
