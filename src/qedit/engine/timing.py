"""Per-stage wall time for ``EditResult.timings``."""

from __future__ import annotations

import time


class Stopwatch:
    """Collects per-stage timings for ``EditResult.timings``."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self._t
        self._t = now

    def restart(self) -> None:
        """Start counting from now (an edit of a batch starts when its turn comes)."""
        self._t = time.perf_counter()
