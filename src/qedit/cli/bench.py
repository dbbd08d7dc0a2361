"""``qedit bench``: qedit's engine against diffusers' reference pipeline, on one machine, in one run.

Every engine option (``--quantize``, ``--cache``, ``--compile``, ``--cfg-batch``, ``--offload``) is a
bench flag, so a claim about one is checked by running it: the table puts qedit's per-stage
times, transformer passes, peak memory and weight bytes next to the reference's, with the ratio
and the largest pixel difference between the two outputs. ``--batch N`` adds request batching
against N sequential edits. Progress goes to stderr, so ``--json`` output can be piped.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from qedit.cli.engine_flags import add_engine_arguments, engine_options_from_args
from qedit.errors import quote

SIZE = re.compile(r"^(\d+)x(\d+)$")


def _size(text: str) -> tuple[int, int]:
    m = SIZE.match(text.strip().lower())
    if not m:
        raise argparse.ArgumentTypeError(f"expected WxH (e.g. 512x512), got {quote(text)}")
    return int(m.group(1)), int(m.group(2))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="time qedit against diffusers' reference pipeline on the same weights and inputs",
        description="Run qedit's engine and diffusers' reference pipeline on identical components in one "
        "process, interleaved, with the same seed, steps, size and image; print per-stage times, the "
        "end-to-end ratio, peak memory, transformer passes and the largest pixel difference.",
    )
    p.add_argument(
        "--model",
        "--preset",
        dest="model",
        default="small",
        help="small (default: a transformer-bound random model at 512x512), tiny, another spec name, "
        "or a snapshot directory",
    )
    p.add_argument("--size", type=_size, metavar="WxH", help="input image size (default: a square at the spec's area)")
    p.add_argument("--steps", type=int, help="denoising steps (default: the spec's)")
    p.add_argument("--cfg", type=float, help="true CFG scale (default: the spec's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise and of the synthetic image (default 0)")
    p.add_argument("--repeat", type=int, default=2, help="measured runs per side, after one warm-up (default 2)")
    p.add_argument(
        "--batch",
        type=int,
        default=0,
        metavar="N",
        help="also run N edits (seeds and prompts differ) through one edit_batch vs N sequential edits",
    )
    p.add_argument("--no-reference", action="store_true", help="run qedit only")
    p.add_argument("--prompt", help="the instruction (default: a fixed one)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the best available)")
    p.add_argument("--dtype", help="fp32, bf16, fp16 (default: fp32 on CPU, bf16 elsewhere)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    add_engine_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from qedit.bench.inputs import DEFAULT_PROMPT
    from qedit.bench.runner import BenchConfig

    config = BenchConfig(
        model=args.model,
        size=args.size,
        steps=args.steps,
        cfg=args.cfg,
        seed=args.seed,
        repeat=args.repeat,
        batch=args.batch,
        reference=not args.no_reference,
        prompt=args.prompt or DEFAULT_PROMPT,
        device=args.device,
        dtype=args.dtype,
        options=engine_options_from_args(args),
    )
    config.check()  # before anything loads

    from qedit.bench.report import format_text, summary
    from qedit.bench.runner import run_bench

    result = run_bench(config, log=lambda line: print(f"bench: {line}", file=sys.stderr, flush=True))
    figures = summary(result)
    print(json.dumps(figures, indent=2) if args.json else format_text(figures))
    return 0
