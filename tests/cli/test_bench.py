"""``qedit bench`` on the tiny preset: one real run of both pipelines, checked through its JSON and
its table; bad flags are refused in one line before anything loads."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from qedit.cli import main


@pytest.fixture(scope="module")
def figures(tiny_path: Path) -> dict[str, Any]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["bench", "--model", "tiny", "--steps", "2", "--repeat", "1", "--batch", "2", "--json"])
    assert code == 0
    return json.loads(out.getvalue())


def test_json_has_both_sides_stages_and_ratios(figures: dict[str, Any]) -> None:
    assert figures["spec"] == "tiny" and figures["working_size"] == [128, 128]
    for side in ("qedit", "reference"):
        s = figures[side]
        assert set(s["stages"]) == {"encode", "denoise", "decode", "other"}
        assert s["stages"]["denoise"] > 0 and len(s["steps"]) == 2
        assert s["transformer_passes"] == 4  # 2 steps x 2 CFG branches
        assert 0 < s["transformer_share"] <= 1
        assert s["peak_memory"]["peak_bytes"] > 0
    assert figures["ratios"]["time"] == pytest.approx(figures["qedit"]["total"] / figures["reference"]["total"])
    assert figures["ratios"]["transformer_passes"] == 1.0
    assert figures["ratios"]["transformer_bytes"] == 1.0  # the reference runs on qedit's components
    assert figures["max_pixel_diff"] <= 1 and figures["within_tolerance"] is True


def test_batch_reports_throughput_against_sequential_edits(figures: dict[str, Any]) -> None:
    b = figures["batch"]
    assert b["n"] == 2
    if b["skipped"]:
        pytest.skip(b["skipped"])
    assert b["error"] is None
    assert b["throughput_ratio"] == pytest.approx(b["batched_images_per_s"] / b["sequential_images_per_s"])
    assert b["batched_calls"] * 2 == b["sequential_calls"]  # the two edits' rows share every call


def test_text_shows_the_stages_side_by_side_and_the_ratio(figures: dict[str, Any]) -> None:
    from qedit.bench.report import format_text

    text = format_text(figures)
    assert "qedit/ref" in text and "step 2" in text and "transformer share" in text
    assert "time ratio qedit/reference" in text
    assert ("faster than the reference" in text) or ("slower than the reference" in text)
    assert "same output" in text


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--repeat", "0"], "--repeat"),
        (["--batch", "1"], "--batch"),
        (["--steps", "500"], "--steps"),
        (["--cfg", "0.5"], "--cfg"),
        (["--size", "big"], "--size"),
        (["--quantize", "bogus"], "--quantize"),
        (["--steps", "x"], "--steps"),
    ],
)
def test_bad_flags_exit_2_with_one_line_naming_the_flag(
    flags: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(["bench", "--model", "tiny", *flags])
    except SystemExit as e:  # argparse's own refusals
        code = e.code  # type: ignore[assignment]
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "error" in err and named in err
