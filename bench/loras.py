"""Few-step and LoRA figures, measured side by side in one run (tiny preset unless told otherwise).

    .venv/bin/python bench/loras.py                       # tiny preset, the reference's 50 steps
    .venv/bin/python bench/loras.py --model /models/Qwen-Image-Edit-2509 --steps 40 --size 1024

1. Transformer passes and wall time per edit: the reference recipe (``--steps`` with true CFG, two
   passes per step) against ``fast=4`` and ``fast=8`` (the Lightning LoRA, one pass per step).
2. Switching LoRAs between requests: edits alternating between two LoRAs with the adapter LRU
   warm (both stay loaded) against cold (an LRU of one: every switch reloads the file).

Each figure is the median of ``--repeat`` runs after one warm-up; ratios are what to read on a
noisy machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from qedit.engine.pipeline import Engine
from qedit.models.protocol import EditRequest
from qedit.params import EditParams


def photo(size: int) -> Image.Image:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)


def timed(engine: Engine, image: Image.Image, repeat: int, counter: list[int], **kw: object) -> tuple[float, int]:
    """Median seconds per edit and transformer passes per edit."""
    params = EditParams(prompt="make it a watercolour", seed=1, **kw)
    engine.edit(EditRequest(params=params, images=(image,)))  # warm-up
    times = []
    for _ in range(repeat):
        counter[0] = 0
        start = time.perf_counter()
        engine.edit(EditRequest(params=params, images=(image,)))
        times.append(time.perf_counter() - start)
    return statistics.median(times), counter[0]


def switching(engine: Engine, image: Image.Image, files: list[Path], rounds: int) -> tuple[float, int]:
    """Mean seconds per edit alternating between LoRAs (none: no LoRA), and the loads it took."""
    loads = engine.adapters.stats.loads
    start = time.perf_counter()
    for i in range(rounds):
        loras = [{"path": str(files[i % len(files)])}] if files else []
        params = EditParams(prompt="x", seed=1, num_inference_steps=1, loras=loras)
        engine.edit(EditRequest(params=params, images=(image,)))
    return (time.perf_counter() - start) / rounds, engine.adapters.stats.loads - loads


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--steps", type=int, default=50, help="steps of the reference recipe (50 for Edit, 40 for 2509)")
    ap.add_argument("--size", type=int, default=256, help="input side in px")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=20, help="edits in the switching test")
    ap.add_argument("--loras", nargs=2, type=Path, help="two LoRA files to switch between (default: the tiny ones)")
    args = ap.parse_args()

    engine = Engine.load(args.model)
    counter = [0]
    engine.components.transformer.register_forward_hook(lambda *_: counter.__setitem__(0, counter[0] + 1))
    image = photo(args.size)
    print(f"model {engine.model_id} ({engine.spec.name}) on {engine.components.device}, {args.size}px input")
    print("\n1. passes and time per edit")
    base_t, base_p = timed(engine, image, args.repeat, counter, num_inference_steps=args.steps, true_cfg_scale=4.0)
    print(f"   {'recipe':<24}{'passes':>8}{'s/edit':>10}{'speed-up':>10}")
    print(f"   {f'reference {args.steps} steps cfg 4':<24}{base_p:>8}{base_t:>10.3f}{1.0:>10.1f}x")
    for fast in (8, 4):
        t, p = timed(engine, image, args.repeat, counter, fast=fast)
        print(f"   {f'fast {fast} (Lightning)':<24}{p:>8}{t:>10.3f}{base_t / t:>10.1f}x")

    files = args.loras or [engine.components.path / "loras" / f"style-{f}.safetensors" for f in ("kohya", "comfyui")]
    print(f"\n2. alternating between {files[0].name} and {files[1].name}, {args.rounds} edits of 1 step")
    none_t, _ = switching(engine, image, [], args.rounds)
    warm_t, warm_loads = switching(engine, image, files, args.rounds)
    engine.adapters.max_loaded = 1  # cold: an LRU of one reloads on every switch
    cold_t, cold_loads = switching(engine, image, files, args.rounds)
    print(f"   {'LRU':<10}{'loads':>7}{'s/edit':>10}{'over no LoRA':>14}")
    print(f"   {'none':<10}{0:>7}{none_t:>10.4f}{'':>14}")
    print(f"   {'warm':<10}{warm_loads:>7}{warm_t:>10.4f}{warm_t - none_t:>+14.4f}")
    print(f"   {'cold':<10}{cold_loads:>7}{cold_t:>10.4f}{cold_t - none_t:>+14.4f}")
    print(f"   a switch costs {(cold_t - warm_t) * 1000:.1f} ms cold over warm ({cold_t / warm_t:.2f}x per edit)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
