"""``qedit edit`` as a user runs it: a real process, the tiny preset, files on disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qedit import imageio
from qedit.cli import edit_flags, main
from qedit.errors import EditCancelled
from tests.support.engines import DriftEngine


def qedit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "qedit.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("in") / "photo.jpg"
    Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((260, 190)).save(path, quality=95)
    return path


def test_edit_writes_the_output_with_metadata_and_chains(photo: Path, tmp_path: Path, tiny_path: Path) -> None:
    out = tmp_path / "out.png"
    r = qedit(
        "edit",
        str(photo),
        "-p",
        "把招牌上的字改成“开业大吉”",
        "-o",
        str(out),
        "--model",
        "tiny",
        "--steps",
        "2",
        "--seed",
        "12",
    )
    assert r.returncode == 0, r.stderr
    assert "seed 12" in r.stdout
    assert "2/2" in r.stderr  # the progress bar reached the last step
    img = Image.open(out)
    assert img.size == (260, 190)
    meta = imageio.read_metadata(out)
    assert meta["prompt"] == "把招牌上的字改成“开业大吉”" and meta["seed"] == "12" and meta["steps"] == "2"
    assert len(json.loads(meta["chain"])) == 1

    # feed the output back in: the chain grows and keeps the first step
    out2 = tmp_path / "out2.webp"
    r = qedit(
        "edit",
        str(out),
        "-p",
        "now make it blue",
        "-o",
        str(out2),
        "--model",
        "tiny",
        "--steps",
        "1",
        "--format",
        "webp",
        "-q",
    )
    assert r.returncode == 0, r.stderr
    chain = json.loads(imageio.read_metadata(out2)["chain"])
    assert [step["prompt"] for step in chain] == ["把招牌上的字改成“开业大吉”", "now make it blue"]
    assert chain[0]["seed"] == 12


def test_same_seed_same_pixels(photo: Path, tmp_path: Path, tiny_path: Path) -> None:
    outs = [tmp_path / f"o{i}.png" for i in range(2)]
    for out in outs:
        r = qedit("edit", str(photo), "-p", "x", "-o", str(out), "--model", "tiny", "--steps", "1", "--seed", "3", "-q")
        assert r.returncode == 0, r.stderr
    assert np.array_equal(np.asarray(Image.open(outs[0])), np.asarray(Image.open(outs[1])))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--steps", "0"], "steps"),
        (["--steps", "101"], "steps"),
        (["--cfg", "0.5"], "cfg"),
        (["--seed", "2147483648"], "seed"),
        (["--size", "100x100"], "256-1536"),
        (["--num", "9"], "num"),
        (["-p", "   "], "prompt"),
        (["--model", "/nonexistent/model"], "no such model directory"),
    ],
)
def test_bad_parameters_exit_2_with_one_line(photo: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    out = tmp_path / "out.png"
    args = ["edit", str(photo), "-p", "ok", "-o", str(out), "--model", "tiny", *extra]
    r = qedit(*args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert message in r.stderr
    assert not out.exists()


def test_bad_images_exit_2(tmp_path: Path, photo: Path) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    out = tmp_path / "out.png"
    for args, message in (
        ([str(junk)], "image[0]"),
        ([str(tmp_path / "missing.png")], "image[0]"),
        ([str(photo), str(photo)], "at most 1 image"),
    ):
        r = qedit("edit", *args, "-p", "ok", "-o", str(out), "--model", "tiny", "--steps", "1")
        assert r.returncode == 2, r.stderr
        assert message in r.stderr and "Traceback" not in r.stderr
        assert not out.exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in {"junk.png"}]
    assert leftovers == []


class NoEditEngine:
    """Stands in for a loaded model that takes one image; these tests never get as far as an edit."""

    model_id = "someone/one-image-model"
    max_images = 1

    def edit(self, request, **kw):  # type: ignore[no-untyped-def]
        raise AssertionError("the request should have been refused before the edit")


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """Every model load, by the --model it was asked for (none should happen for a refused request)."""
    seen: list[str | None] = []

    def load(args):  # type: ignore[no-untyped-def]
        seen.append(args.model)
        return NoEditEngine()

    monkeypatch.setattr(edit_flags, "load_engine", load)
    return seen


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--box-mask"], "--box-mask: needs at least one --box"),
        (["--box", "0,0,300,10"], "--box[0]: x1 must be <= the image width 260, got 300"),
        (["--box", "0,0,10,10:blurple"], "--box[0].colour: unknown colour 'blurple'"),
        (["--mask", "black.png"], "--mask: mask is all black"),
        (["--mask", "white.png", "--box", "0,0,10,10", "--box-mask"], "--mask: give a mask or box_mask, not both"),
        (["--box", "20,20,30,30", "--box-mask", "--mask-grow", "-8"], "--box: mask is all black after shrinking by 8"),
        (["--box", "-5,0,10,10"], "--box[0]: x0 must be >= 0, got -5 (box -5,0,10,10)"),  # a value, not an option
        (["--box", "0,0,10,10", "--box", "0,-3,10,10:blue"], "--box[1]: y0 must be >= 0, got -3 (box 0,-3,10,10:blue)"),
    ],
)
def test_image_rules_are_checked_before_the_model_loads(
    photo: Path,
    tmp_path: Path,
    loads: list[str | None],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    expected: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    Image.new("L", (64, 48), 0).save("black.png")
    Image.new("L", (64, 48), 255).save("white.png")
    assert main(["edit", str(photo), "-p", "x", "-o", "out.png", "--model", "tiny", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qedit edit: error: ") and expected in err and err.count("\n") == 1
    assert loads == [] and not (tmp_path / "out.png").exists()


def test_image_count_comes_from_the_spec_before_loading(
    photo: Path, tmp_path: Path, loads: list[str | None], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.delenv("QEDIT_MODEL", raising=False)  # the default model: tiny, one image
    out = str(tmp_path / "out.png")
    assert main(["edit", str(photo), str(photo), "-p", "x", "-o", out]) == 2
    assert "images: model tiny takes at most 1 image(s), got 2" in capsys.readouterr().err
    assert main(["edit", *[str(photo)] * 4, "-p", "x", "-o", out, "--model", "someone/one-image-model"]) == 2
    assert "images: model someone/one-image-model takes at most 3 image(s), got 4" in capsys.readouterr().err
    assert loads == []  # a hub id is held to the family's limit before loading...
    assert main(["edit", str(photo), str(photo), "-p", "x", "-o", out, "--model", "someone/one-image-model"]) == 2
    assert "images: model someone/one-image-model takes at most 1 image(s), got 2" in capsys.readouterr().err
    assert loads == ["someone/one-image-model"]  # ...and to its own once loaded


def test_a_cancelled_edit_writes_nothing_and_exits_130(
    photo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class CancelledEngine(NoEditEngine):
        def edit(self, request, *, on_step=None, cancel=None):  # type: ignore[no-untyped-def]
            assert cancel is not None and not cancel.cancelled
            raise EditCancelled("cancelled before step 1/4")

    monkeypatch.setattr(edit_flags, "load_engine", lambda args: CancelledEngine())
    out = tmp_path / "out.png"
    assert main(["edit", str(photo), "-p", "x", "-o", str(out), "--model", "tiny", "-q"]) == 130
    assert capsys.readouterr().err == "qedit edit: cancelled; nothing written\n"
    assert not out.exists()


@pytest.mark.slow  # two real runs of `qedit edit` for a naming rule (keeps the default suite under 10 minutes)
def test_without_o_the_output_goes_beside_the_input_and_never_overwrites(photo: Path, tmp_path: Path) -> None:
    src = tmp_path / "holiday.jpg"
    src.write_bytes(photo.read_bytes())
    for name in ("holiday-edited.png", "holiday-edited-2.png"):
        r = qedit("edit", str(src), "-p", "make it warmer", "--model", "tiny", "--steps", "1", "-q")
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(str(tmp_path / name)) and (tmp_path / name).is_file()
    assert imageio.read_metadata(tmp_path / "holiday-edited.png")["prompt"] == "make it warmer"


def test_input_sides_follow_the_services_rule(
    photo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One rule for tiny inputs: 384-3072 px per side by default, as the service; lowered explicitly."""
    engine = DriftEngine(paint=(0, 0, 1, 1))
    monkeypatch.setattr(edit_flags, "load_engine", lambda args: engine)
    monkeypatch.delenv("QEDIT_MIN_SIDE")
    monkeypatch.delenv("QEDIT_MAX_SIDE", raising=False)
    dot, wide = tmp_path / "dot.png", tmp_path / "wide.png"
    Image.new("RGB", (1, 1), (200, 10, 10)).save(dot)
    Image.new("RGB", (3100, 400)).save(wide)
    out = str(tmp_path / "out.png")
    for args, expected in (
        ([str(dot)], "image[0]: image width must be 384-3072 px, got 1 (1x1)"),
        ([str(photo)], "image[0]: image width must be 384-3072 px, got 260 (260x190)"),
        ([str(wide)], "image[0]: image width must be 384-3072 px, got 3100 (3100x400)"),
        ([str(dot), "--min-side", "0"], "--min-side: need 1 <= min side <= max side, got 0 and 3072"),
    ):
        assert main(["edit", *args, "-p", "x", "-o", out]) == 2
        assert capsys.readouterr().err == f"qedit edit: error: {expected}\n"
    monkeypatch.setenv("QEDIT_MIN_SIDE", "a lot")
    assert main(["edit", str(dot), "-p", "x", "-o", out]) == 2
    assert capsys.readouterr().err == "qedit edit: error: QEDIT_MIN_SIDE: must be a whole number of px, got 'a lot'\n"
    assert engine.calls == [] and not Path(out).exists()

    assert main(["edit", str(dot), "-p", "x", "-o", out, "--min-side", "1", "-q"]) == 0  # the user's explicit choice
    monkeypatch.setenv("QEDIT_MIN_SIDE", "128")  # the service's variable sets the CLI's default too
    assert main(["edit", str(photo), "-p", "x", "-o", out, "-q"]) == 0
    assert [request.images[0].size for request in engine.calls] == [(1, 1), (260, 190)]


def test_errors_quote_long_user_text_briefly(
    photo: Path, tmp_path: Path, loads: list[str | None], capsys: pytest.CaptureFixture[str]
) -> None:
    """A 25,000-character prompt is counted, not echoed: every error stays one short line."""
    out = str(tmp_path / "out.png")
    for extra, expected in (
        (["-p", "a" * 25000], "--prompt: String should have at most 8000 characters (got 'aaaa"),
        (["--negative", "b" * 9000], "--negative: String should have at most 8000 characters (got 'bbbb"),
        (["--box", "1,2," + "3" * 5000], "--box[0]: expected x0,y0,x1,y1[:colour], got '1,2,333"),
        (["--size", "9" * 30000], "--size: expected WxH (e.g. 1024x768), got '999"),
        (["--steps", "x" * 25000], "qedit edit: error: argument --steps: invalid int value: 'xxx"),
    ):
        try:
            assert main(["edit", str(photo), "-p", "x", "-o", out, *extra]) == 2
        except SystemExit as e:  # argparse's own errors exit from the parser
            assert e.code == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1 and len(err) < 250, err[:300]
        assert "characters)" in err
    assert loads == []


def test_a_bad_model_config_is_one_line_naming_the_file(
    photo: Path, tiny_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snap = tmp_path / "snap"
    shutil.copytree(tiny_path, snap)
    config = snap / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "base_shift": "abc"}))
    out = tmp_path / "out.png"
    assert main(["edit", str(photo), "-p", "x", "-o", str(out), "--model", str(snap), "--steps", "1", "-q"]) == 2
    err = capsys.readouterr().err
    assert err == f"qedit edit: error: model: {config}: base_shift is 'abc', expected float | None\n"
    assert not out.exists()


def test_the_model_is_recorded_by_its_canonical_id(
    photo: Path, tiny_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--model ./snap/`` and ``--model /abs/snap`` are one model: the metadata names its resolved path."""
    snap = tmp_path / "snap"
    shutil.copytree(tiny_path, snap, ignore=shutil.ignore_patterns("loras", "lightning"))
    monkeypatch.chdir(tmp_path)
    assert main(["edit", str(photo), "-p", "x", "-o", "out.png", "--model", "./snap/", "--steps", "1", "-q"]) == 0
    assert imageio.read_metadata(tmp_path / "out.png")["model"] == str(snap.resolve())
