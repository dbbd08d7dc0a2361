"""``qedit session`` as a user runs it: new, edit (masks, boxes, preserve), log, checkout, undo, export.

Most tests run the command in-process with the drift stand-in engine (``tests.support.engines``) in
place of ``load_engine``; the last runs a real process on the tiny preset, end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from qedit import masks
from qedit.cli import edit_flags, main
from tests.support.engines import DriftEngine
from tests.support.images import scene


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> DriftEngine:
    engine = DriftEngine(paint=(100, 80, 140, 120))
    monkeypatch.setattr(edit_flags, "load_engine", lambda args: engine)
    return engine


@pytest.fixture
def started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Path:
    """A session ``poster`` in ``tmp_path/poster.qedit`` (the default place, cwd = tmp_path)."""
    monkeypatch.chdir(tmp_path)
    scene().save(tmp_path / "poster.png")
    assert main(["session", "new", "poster", "poster.png"]) == 0
    assert "step 0 = poster.png (256x192)" in capsys.readouterr().out
    return tmp_path / "poster.qedit"


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_masked_edits_log_checkout_undo_export(
    started: Path, engine: DriftEngine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mask = Image.new("L", (64, 48), 0)  # another size than the image: resized to it
    ImageDraw.Draw(mask).rectangle([24, 19, 35, 30], fill=255)
    mask.save(tmp_path / "mask.png")
    for prompt in ("paint the square green", "paint it again"):
        code = main(
            [
                "session",
                "edit",
                "poster",
                "-p",
                prompt,
                "--mask",
                "mask.png",
                "--mask-grow",
                "2",
                "--mask-feather",
                "3",
                "--seed",
                "4",
                "-q",
            ]
        )
        assert code == 0
    out = capsys.readouterr().out
    assert "* step 2 (from 1)  seed 4" in out
    keep = masks.prepare_edit_mask(mask, (256, 192), 2, 3).keep
    step0, step2 = pixels(started / "steps/000.png"), pixels(started / "steps/002.png")
    assert np.abs(step2 - step0)[keep].max() == 0
    assert (step2[~keep] != step0[~keep]).any()

    assert main(["session", "log", "poster"]) == 0
    log = capsys.readouterr().out
    assert "3 step(s), HEAD = 2" in log
    assert "*   2   <- 1" in log and '"paint it again"' in log and "mask masks/002.png" in log
    assert "original  poster.png  256x192" in log

    assert main(["session", "undo", "poster"]) == 0
    assert capsys.readouterr().out.strip() == "HEAD = step 1"
    assert main(["session", "checkout", "poster", "0"]) == 0
    assert main(["session", "edit", "poster", "-p", "a new branch", "--preserve", "auto", "-q"]) == 0
    capsys.readouterr()
    steps = json.loads((started / "session.json").read_text())["steps"]
    assert steps[3]["parent"] == 0 and steps[3]["params"]["preserve"] == "auto"

    assert main(["session", "export", "poster", "out"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["000.png", "001.png", "steps.json"]
    assert [s["index"] for s in json.loads((tmp_path / "out" / "steps.json").read_text())["steps"]] == [0, 3]


def test_box_mask_edit_from_the_command_line(started: Path, engine: DriftEngine) -> None:
    code = main(
        [
            "session",
            "edit",
            "poster",
            "-p",
            "write SALE in the blue box",
            "--box",
            "90,70,150,130:blue",
            "--box",
            "10,10,40,40",
            "--box-mask",
            "--mask-feather",
            "2",
            "-q",
        ]
    )
    assert code == 0
    params = engine.calls[0].params
    assert [b.colour for b in params.boxes] == ["blue", "red"] and params.box_mask
    keep = masks.prepare_edit_mask(masks.boxes_mask((256, 192), params.boxes), (256, 192), 0, 2).keep
    assert np.array_equal(pixels(started / "steps/001.png")[keep], pixels(started / "steps/000.png")[keep])


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--box", "0,0,300,10"], "--box[0]: x1 must be <= the image width 256, got 300"),
        (["--box", "5,5,20,20", "--box", "10,10,10,30"], "--box[1]: box 10,10,10,30 is empty"),
        (["--box", "1,2,3"], "--box[0]: expected x0,y0,x1,y1[:colour]"),
        (["--box", "0,0,10,10:blurple"], "--box[0].colour: unknown colour 'blurple'"),
        (["--box-mask"], "--box-mask: needs at least one --box"),
        (["--strength", "1.5"], "--strength: Input should be less than or equal to 1"),
        (["--mask", "black.png"], "--mask: mask is all black"),
        (["--mask", "missing.png"], "--mask: no such file: missing.png"),
        (["--mask", "mask.png", "--mask-grow", "-40"], "--mask: mask is all black after shrinking by 40 px"),
        (["--preserve-threshold", "0"], "--preserve-threshold: Input should be greater than 0"),
        (["--mask", "mask.png", "--box", "0,0,10,10", "--box-mask"], "--mask: give a mask or box_mask, not both"),
        (["--box", "20,20,30,30", "--box-mask", "--mask-grow", "-8"], "--box: mask is all black after shrinking"),
        (["--box", "-5,0,10,10"], "--box[0]: x0 must be >= 0, got -5 (box -5,0,10,10)"),
        (["--format", "jpeg"], "--format: a session keeps every step as lossless PNG"),  # was ignored silently
        (["-p", "p" * 25000], "--prompt: String should have at most 8000 characters (got 'ppp"),
    ],
)
def test_bad_appearance_input_is_one_line_and_exit_2(
    started: Path,
    engine: DriftEngine,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    expected: str,
) -> None:
    Image.new("L", (256, 192), 0).save(tmp_path / "black.png")
    small = Image.new("L", (256, 192), 0)
    ImageDraw.Draw(small).rectangle([100, 80, 159, 139], fill=255)
    small.save(tmp_path / "mask.png")
    before = (started / "session.json").read_bytes()
    assert main(["session", "edit", "poster", "-p", "x", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qedit session: error: ") and expected in err and err.count("\n") == 1
    assert len(err) < 250  # a long prompt is counted, not echoed
    assert engine.calls == [] and (started / "session.json").read_bytes() == before


def test_a_session_starts_only_from_an_image_the_service_would_take(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``session new`` holds step 0 to the input-size rule (384-3072 px unless lowered explicitly)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("QEDIT_MIN_SIDE")
    scene().save("poster.png")
    assert main(["session", "new", "poster", "poster.png"]) == 2
    assert capsys.readouterr().err == (
        "qedit session: error: image: image width must be 384-3072 px, got 256 (256x192)\n"
    )
    assert not (tmp_path / "poster.qedit").exists()
    assert main(["session", "new", "poster", "poster.png", "--min-side", "192"]) == 0
    assert (tmp_path / "poster.qedit" / "steps" / "000.png").is_file()


def test_session_errors(started: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["session", "new", "poster", "poster.png"]) == 2
    assert "name: a session already exists in poster.qedit" in capsys.readouterr().err
    assert main(["session", "log", "nope"]) == 2
    assert "no session at nope.qedit" in capsys.readouterr().err
    assert main(["session", "checkout", "poster", "3"]) == 2
    assert "step: step must be 0-0, got 3" in capsys.readouterr().err
    assert main(["session", "undo", "poster"]) == 2
    assert "nothing to undo" in capsys.readouterr().err
    assert main(["session", "new", "bad name", "poster.png"]) == 2
    assert main(["session", "new", "other", "missing.png"]) == 2
    assert "image: no such file" in capsys.readouterr().err
    assert not (tmp_path / "other.qedit").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["session", "export", "poster", "full"]) == 2
    assert "out_dir: full exists and is not an empty directory" in capsys.readouterr().err


def test_explicit_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scene().save(tmp_path / "a.png")
    where = tmp_path / "sessions" / "mine"
    (tmp_path / "sessions").mkdir()
    assert main(["session", "new", "card", str(tmp_path / "a.png"), "--dir", str(where)]) == 0
    assert (where / "session.json").is_file()
    assert main(["session", "log", "card", "--dir", str(where)]) == 0
    assert main(["session", "log", "other", "--dir", str(where)]) == 2
    assert "holds session 'card', not 'other'" in capsys.readouterr().err


def test_end_to_end_on_the_tiny_model(
    tmp_path: Path, tiny_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real engine through ``--model tiny``: masked rounds, then a preserve round; the pixels
    outside the mask are step 0's at the end."""
    monkeypatch.chdir(tmp_path)
    scene().save(tmp_path / "poster.png")
    mask = Image.new("L", (256, 192), 0)
    ImageDraw.Draw(mask).ellipse([80, 60, 170, 140], fill=255)
    mask.save(tmp_path / "mask.png")
    assert main(["session", "new", "poster", "poster.png"]) == 0
    for i in range(2):
        code = main(
            [
                "session",
                "edit",
                "poster",
                "-p",
                f"round {i}",
                "--model",
                "tiny",
                "--steps",
                "2",
                "--seed",
                str(i),
                "--mask",
                "mask.png",
                "-q",
            ]
        )
        assert code == 0, capsys.readouterr().err
    code = main(
        ["session", "edit", "poster", "-p", "no mask", "--model", "tiny", "--steps", "1", "--preserve", "auto", "-q"]
    )
    assert code == 0, capsys.readouterr().err
    keep = masks.prepare_edit_mask(mask, (256, 192), 0, 4).keep
    step0, step2 = pixels(tmp_path / "poster.qedit/steps/000.png"), pixels(tmp_path / "poster.qedit/steps/002.png")
    assert np.abs(step2 - step0)[keep].max() == 0
    assert (step2[~keep] != step0[~keep]).any()  # the model did edit inside
    assert main(["session", "export", "poster", "out"]) == 0
    steps = json.loads((tmp_path / "out" / "steps.json").read_text())["steps"]
    assert [s["model"] for s in steps] == [None, "tiny", "tiny", "tiny"]
