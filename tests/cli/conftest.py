"""CLI tests feed small images (64x48 to 400x300) on purpose: an edit of the tiny preset costs the same
at any size, and small files keep the suite fast. The input-size rule (``request_check.SideLimits``,
384-3072 px by default, as the service) is lowered here through the variable the CLI and the service
both read; the tests of the rule itself set or clear it again.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def small_inputs_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QEDIT_MIN_SIDE", "1")
