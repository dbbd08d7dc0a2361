"""A terminal progress bar for denoising steps: step n/N, it/s and ETA (tqdm)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from qedit.models.protocol import StepCallback


@contextmanager
def step_bar(
    enabled: bool = True, desc: str = "denoising", *, leave: bool = True, position: int | None = None
) -> Iterator[StepCallback | None]:
    """Yields an ``on_step`` callback that advances the bar (``None`` when disabled).

    ``leave=False, position=1`` makes a transient bar under another one (``qedit batch``'s files bar).
    """
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    bar: tqdm | None = None  # made at the first step, when the total is known (no "0step" flash)

    def on_step(step: int, total: int, elapsed: float) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(
                total=total, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True, leave=leave, position=position
            )
        elif bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(step - bar.n)

    try:
        yield on_step
    finally:
        if bar is not None:
            bar.close()
