"""An edit as the terminal runs it: a progress bar for the denoising steps (step n/N, it/s and ETA,
tqdm), and Ctrl-C that stops it between steps. ``qedit edit``, ``batch`` and ``session edit`` all
run their edits through ``run_edit``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from qedit.errors import EditCancelled
from qedit.models.protocol import CancelToken, StepCallback

T = TypeVar("T")


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


def run_edit(
    edit: Callable[..., T],
    *,
    progress: bool = True,
    desc: str = "denoising",
    leave: bool = True,
    position: int | None = None,
    cancelled: str = "",
) -> T:
    """``edit(on_step=..., cancel=...)`` under a step bar (see ``step_bar`` for the bar's options).

    Ctrl-C also sets the cancel token, so an engine running the steps elsewhere stops at the next
    one. An edit that stops cancelled raises ``KeyboardInterrupt(cancelled)``: the command then ends
    as interrupted (exit 130), saying ``cancelled`` (what was left undone) when given.
    """
    cancel = CancelToken()
    with step_bar(progress, desc, leave=leave, position=position) as on_step:
        try:
            return edit(on_step=on_step, cancel=cancel)
        except KeyboardInterrupt:
            cancel.cancel()
            raise
        except EditCancelled:
            raise KeyboardInterrupt(cancelled) from None
