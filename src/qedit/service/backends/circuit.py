"""A circuit breaker per backend: up (closed), down (open), half-open (one probe in flight).

``failures`` consecutive failures open it; it stays open for a backoff that doubles with every
opening that follows another (``base`` .. ``cap``); then one probe decides: a health check where
the backend has one, else one real task let through (half-open). A success closes it and resets
the backoff. The clock is injected so the tests can walk through time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

State = Literal["up", "down", "half-open"]


class Circuit:
    def __init__(
        self, failures: int = 3, base: float = 1.0, cap: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold, self.base, self.cap, self.clock = failures, base, cap, clock
        self.state: State = "up"
        self.consecutive = 0
        self.backoff = 0.0  # the current open period; 0 while up
        self.opened_at: float | None = None
        self.probing = False
        self.last_error: str | None = None
        self._lock = threading.Lock()

    @property
    def next_probe(self) -> float | None:
        """When the open circuit may be probed again (clock time); None while up."""
        return None if self.opened_at is None else self.opened_at + self.backoff

    def allow(self, probe_by_task: bool = True) -> bool:
        """May a task go there now? Open: no, until the backoff ran out; then (``probe_by_task``) one task
        goes as the half-open probe. Backends with a health check are probed by it instead."""
        with self._lock:
            if self.state == "up":
                return True
            if self.state == "half-open" or not probe_by_task:
                return False
            assert self.next_probe is not None
            if self.clock() < self.next_probe:
                return False
            self.state, self.probing = "half-open", True
            return True

    def due(self) -> bool:
        """Is a health check of the open circuit due?"""
        with self._lock:
            return self.state != "up" and self.next_probe is not None and self.clock() >= self.next_probe

    def success(self) -> None:
        with self._lock:
            self.state, self.consecutive, self.backoff, self.opened_at, self.probing = "up", 0, 0.0, None, False

    def abandon_probe(self) -> None:
        """The half-open probe ended without an answer (its task was cancelled): another may go now."""
        with self._lock:
            if self.state == "half-open":
                self.state, self.probing = "down", False
                self.opened_at = self.clock() - self.backoff

    def failure(self, error: str, *, hard: bool = False) -> None:
        """One failure; ``hard`` (a failed health check or probe: the backend itself said no) opens at once."""
        with self._lock:
            self.last_error = error[:300]
            self.consecutive += 1
            reopen = self.state != "up"
            if not (hard or reopen or self.consecutive >= self.threshold):
                return
            self.backoff = min(self.cap, self.backoff * 2) if reopen and self.backoff else self.base
            self.state, self.opened_at, self.probing = "down", self.clock(), False
