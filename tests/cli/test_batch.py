"""``qedit batch`` as a user runs it over a folder: names, resume, bad files, seeds, progress.

Most tests run the real command (``qedit.cli.main``) with a tiny stand-in engine (a deterministic
colour inversion, instant) swapped in for the model loader, so the batch logic is tested in
milliseconds; ``test_tiny_model_end_to_end`` runs the real engine with ``--model tiny``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from qedit import imageio
from qedit.cli import edit_flags, main
from qedit.errors import InvalidInput
from qedit.models.protocol import CancelToken, EditedImage, EditRequest, EditResult, StepCallback
from tests.support import images as I


class InvertEngine:
    """Stands in for the model: output = inverted input (resized to ``size``), metadata like the engine's."""

    model_id = "invert"
    max_images = 1

    def __init__(self, fail_on: str | None = None, interrupt_on: str | None = None) -> None:
        self.calls: list[EditRequest] = []
        self.fail_on, self.interrupt_on = fail_on, interrupt_on

    def edit(
        self, request: EditRequest, *, on_step: StepCallback | None = None, cancel: CancelToken | None = None
    ) -> EditResult:
        self.calls.append(request)
        p = request.params
        if self.interrupt_on and request.parent and request.parent.endswith(self.interrupt_on):
            raise KeyboardInterrupt
        if self.fail_on and request.parent and request.parent.endswith(self.fail_on):
            raise InvalidInput("image is too small for this model", field="image")
        steps = p.num_inference_steps or 3
        for s in range(1, steps + 1):
            if on_step:
                on_step(s, steps, 0.0)
        base = p.seed if p.seed >= 0 else random.randrange(2**31)
        src = request.images[-1]
        outs = []
        for i in range(p.num_images):
            img = ImageOps.invert(src)
            if p.size:
                img = img.resize(p.size)
            meta = {
                "prompt": p.prompt,
                "seed": str(base + i),
                "model": self.model_id,
                "chain": json.dumps([*request.history, {"prompt": p.prompt}]),
            }
            outs.append(EditedImage(image=img, seed=base + i, metadata=meta))
        return EditResult(outputs=tuple(outs), model=self.model_id)


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> InvertEngine:
    eng = InvertEngine()
    loads: list[int] = []

    def load(args):  # type: ignore[no-untyped-def]
        loads.append(1)
        return eng

    monkeypatch.setattr(edit_flags, "load_engine", load)
    eng.loads = loads  # type: ignore[attr-defined]
    return eng


def folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def run(*args: str) -> int:
    return main(["batch", *args])


def test_edits_every_supported_image_once_with_one_model_load(tmp_path: Path, engine, capsys) -> None:
    src = folder(
        tmp_path / "in",
        {
            "a.jpg": I.jpeg(),
            "b.PNG": I.png(),
            "c.webp": I.webp(),
            "d.bmp": I.bmp(),
            "e.tif": I.tiff(),
            "notes.txt": b"hello",
            ".hidden.png": I.png(),
        },
    )
    out = tmp_path / "out"
    assert run(str(src), "-p", "invert it", "-o", str(out), "--seed", "7", "--steps", "2") == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png", "d.png", "e.png"]
    assert len(engine.loads) == 1 and len(engine.calls) == 5
    got = np.asarray(Image.open(out / "b.png"), dtype=int)
    assert np.array_equal(got, 255 - np.asarray(I.pattern(), dtype=int))  # the engine's image, written losslessly
    meta = imageio.read_metadata(out / "a.png")
    assert meta["prompt"] == "invert it" and meta["seed"] == "7"
    captured = capsys.readouterr()
    assert "done: 5 edited, 0 skipped (already done), 0 failed, 1 other file(s) ignored" in captured.out
    assert "5/5" in captured.err  # the files bar finished
    assert "  a.jpg: " in captured.err and "step" in captured.err  # a step bar ran for the current file


def test_resume_skips_finished_outputs_and_loads_nothing(tmp_path: Path, engine, capsys) -> None:
    src = folder(tmp_path / "in", {"a.png": I.png(), "b.png": I.png(), "c.png": I.png()})
    out = tmp_path / "out"
    assert run(str(src), "-p", "x", "-o", str(out), "-q") == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    engine.calls.clear()
    engine.loads.clear()
    assert run(str(src), "-p", "x", "-o", str(out), "-q") == 0
    assert engine.calls == [] and engine.loads == []  # nothing to do: the model is never loaded
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    (out / "b.png").unlink()
    assert run(str(src), "-p", "x", "-o", str(out), "-q") == 0
    assert [Path(c.parent).name for c in engine.calls] == ["b.png"]
    assert "1 edited, 2 skipped (already done)" in capsys.readouterr().out


def test_unreadable_files_are_listed_and_exit_1_without_stopping(tmp_path: Path, engine, capsys) -> None:
    src = folder(
        tmp_path / "in",
        {
            "a_good.png": I.png(),
            "b_cut.jpg": I.truncated_jpeg(),
            "c_noise.png": I.random_bytes(),
            "d_gif.png": I.gif(),
            "e_good.jpg": I.jpeg(),
            "f_empty.webp": b"",
        },
    )
    out = tmp_path / "out"
    assert run(str(src), "-p", "x", "-o", str(out), "-q") == 1
    assert sorted(p.name for p in out.iterdir()) == ["a_good.png", "e_good.png"]
    captured = capsys.readouterr()
    assert "done: 2 edited, 0 skipped (already done), 4 failed" in captured.out
    start = captured.err.index("4 file(s) could not be edited:")
    listing = captured.err[start:]
    assert "b_cut.jpg: cannot read image: file is truncated" in listing
    assert "c_noise.png: cannot read image: not an image file" in listing
    assert "d_gif.png: unsupported format GIF" in listing
    assert "f_empty.webp:" in listing and "empty" in listing
    assert "Traceback" not in captured.err


def test_engine_rejecting_one_image_is_a_failure_not_a_stop(tmp_path: Path, monkeypatch, capsys) -> None:
    eng = InvertEngine(fail_on="b.png")
    monkeypatch.setattr(edit_flags, "load_engine", lambda args: eng)
    src = folder(tmp_path / "in", {"a.png": I.png(), "b.png": I.png(), "c.png": I.png()})
    assert run(str(src), "-p", "x", "-o", str(tmp_path / "out"), "-q") == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]
    assert "b.png: image is too small for this model" in capsys.readouterr().err


def test_num_outputs_and_fixed_seed_per_file(tmp_path: Path, engine) -> None:
    src = folder(tmp_path / "in", {"one.png": I.png(), "two.jpg": I.jpeg()})
    out = tmp_path / "out"
    assert run(str(src), "-p", "x", "-o", str(out), "--num", "2", "--seed", "40", "--format", "webp", "-q") == 0
    assert sorted(p.name for p in out.iterdir()) == ["one_0.webp", "one_1.webp", "two_0.webp", "two_1.webp"]
    assert [imageio.read_metadata(out / f"two_{i}.webp")["seed"] for i in range(2)] == ["40", "41"]
    assert imageio.read_metadata(out / "one_0.webp")["seed"] == "40"  # every file starts from the same seed
    assert imageio.sniff_format(out / "one_0.webp") == "webp"


def test_random_seed_is_recorded(tmp_path: Path, engine) -> None:
    src = folder(tmp_path / "in", {"a.png": I.png()})
    assert run(str(src), "-p", "x", "-o", str(tmp_path / "out"), "-q") == 0
    seed = int(imageio.read_metadata(tmp_path / "out" / "a.png")["seed"])
    assert engine.calls[0].params.seed == -1 and 0 <= seed < 2**31


def test_format_extension_as_typed_and_size(tmp_path: Path, engine) -> None:
    src = folder(tmp_path / "in", {"a.png": I.png()})
    assert run(str(src), "-p", "x", "-o", str(tmp_path / "o1"), "--format", "jpg", "--size", "300x256", "-q") == 0
    written = tmp_path / "o1" / "a.jpg"
    assert imageio.sniff_format(written) == "jpeg" and Image.open(written).size == (300, 256)
    assert run(str(src), "-p", "x", "-o", str(tmp_path / "o2"), "--format", "jpeg", "-q") == 0
    assert (tmp_path / "o2" / "a.jpeg").exists()


def test_same_stem_different_extensions_do_not_overwrite(tmp_path: Path, engine) -> None:
    src = folder(tmp_path / "in", {"a.png": I.png(), "a.jpg": I.jpeg(), "b.png": I.png()})
    out = tmp_path / "out"
    assert run(str(src), "-p", "x", "-o", str(out), "-q") == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_jpg.png", "a_png.png", "b.png"]


def test_recursive_mirrors_folders_and_skips_the_output_folder(tmp_path: Path, engine) -> None:
    src = folder(tmp_path / "in", {"top.png": I.png(), "sub/deep/x.jpg": I.jpeg(), "sub/y.webp": I.webp()})
    out = src / "edited"  # inside the input folder: must not be picked up on the next run
    assert run(str(src), "-p", "x", "-o", str(out), "-q") == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == ["top.png"]
    assert run(str(src), "-p", "x", "-o", str(out), "-r", "-q") == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "sub/deep/x.png",
        "sub/y.png",
        "top.png",
    ]
    engine.calls.clear()
    assert run(str(src), "-p", "x", "-o", str(out), "-r", "-q") == 0
    assert engine.calls == []  # outputs were not taken as new inputs


def test_input_chain_is_carried_into_the_output(tmp_path: Path, engine) -> None:
    first = tmp_path / "in" / "a.png"
    first.parent.mkdir()
    imageio.save_image(I.pattern(), first, metadata={"chain": json.dumps([{"prompt": "earlier"}])})
    assert run(str(first.parent), "-p", "now", "-o", str(tmp_path / "out"), "-q") == 0
    chain = json.loads(imageio.read_metadata(tmp_path / "out" / "a.png")["chain"])
    assert [s["prompt"] for s in chain] == ["earlier", "now"]


@pytest.mark.parametrize(
    ("setup", "extra", "message"),
    [
        ("missing", [], "no such directory"),
        ("file", [], "is not a directory"),
        ("empty", [], "no images (jpg, jpeg, png, webp, bmp, tiff)"),
        ("ok", ["--steps", "0"], "--steps"),
        ("ok", ["--cfg", "50"], "--cfg"),
        ("ok", ["--size", "10x10"], "256-1536"),
        ("ok", ["--num", "9"], "--num"),
        ("ok", ["-p", "  "], "--prompt"),
    ],
)
def test_user_errors_are_one_line_exit_2_before_loading(tmp_path: Path, engine, capsys, setup, extra, message) -> None:
    src = tmp_path / "in"
    if setup == "file":
        src.write_bytes(b"x")
    elif setup in ("empty", "ok"):
        folder(src, {"a.png": I.png()} if setup == "ok" else {"readme.txt": b"x"})
    assert run(str(src), "-p", "x", "-o", str(tmp_path / "out"), *extra) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert engine.loads == []
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_missing_model_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    src = folder(tmp_path / "in", {"a.png": I.png()})
    assert run(str(src), "-p", "x", "-o", str(tmp_path / "out"), "--model", "/nonexistent/model", "-q") == 2
    err = capsys.readouterr().err
    assert "no such model directory" in err and "Traceback" not in err


def test_parameter_error_from_the_engine_stops_the_batch(tmp_path: Path, monkeypatch, capsys) -> None:
    class TooLong(InvertEngine):
        def edit(self, request, **kw):  # type: ignore[no-untyped-def, override]
            self.calls.append(request)
            raise InvalidInput("prompt is 9000 tokens, the model takes 1024", field="prompt")

    eng = TooLong()
    monkeypatch.setattr(edit_flags, "load_engine", lambda args: eng)
    src = folder(tmp_path / "in", {"a.png": I.png(), "b.png": I.png()})
    assert run(str(src), "-p", "x", "-o", str(tmp_path / "out"), "-q") == 2
    assert len(eng.calls) == 1  # not repeated for every file
    assert "prompt: prompt is 9000 tokens" in capsys.readouterr().err


def test_ctrl_c_keeps_finished_outputs_and_the_next_run_resumes(tmp_path: Path, monkeypatch, capsys) -> None:
    eng = InvertEngine(interrupt_on="b.png")
    monkeypatch.setattr(edit_flags, "load_engine", lambda args: eng)
    src = folder(tmp_path / "in", {"a.png": I.png(), "b.png": I.png(), "c.png": I.png()})
    out = tmp_path / "out"
    assert run(str(src), "-p", "x", "-o", str(out), "-q") == 130
    assert [p.name for p in out.iterdir()] == ["a.png"]  # complete, and no temporary files
    captured = capsys.readouterr()
    assert "stopped: 1 edited" in captured.out and "run the same command again to resume" in captured.err
    eng.interrupt_on = None
    eng.calls.clear()
    assert run(str(src), "-p", "x", "-o", str(out), "-q") == 0
    assert [Path(c.parent).name for c in eng.calls] == ["b.png", "c.png"]


def test_tiny_model_end_to_end(tmp_path: Path, tiny_path: Path, capsys) -> None:
    """The real engine (``--model tiny``): one load, real outputs at the inputs' sizes, metadata, resume."""
    src = folder(
        tmp_path / "in",
        {"wide.jpg": I.jpeg((300, 256)), "tall.png": I.png((256, 272)), "broken.png": I.truncated_png()},
    )
    out = tmp_path / "out"
    request = (str(src), "-p", "把招牌上的字改成“开业大吉”", "-o", str(out), "--model", "tiny", "--steps", "1")
    assert run(*request, "--seed", "5", "-q") == 1
    assert Image.open(out / "wide.png").size == (300, 256)
    assert Image.open(out / "tall.png").size == (256, 272)
    meta = imageio.read_metadata(out / "tall.png")
    assert meta["prompt"] == "把招牌上的字改成“开业大吉”" and meta["seed"] == "5" and meta["model"] == "tiny"
    assert meta["steps"] == "1"
    assert "broken.png: cannot read image: file is truncated" in capsys.readouterr().err
    before = (out / "wide.png").read_bytes()
    assert run(*request, "--seed", "5", "-q") == 1  # the same request again: only broken.png is left to do
    assert (out / "wide.png").read_bytes() == before


def test_resume_redoes_outputs_made_by_another_request(tmp_path: Path, engine, capsys) -> None:
    """An output is reused only if it answers this very request: prompt, flags, input bytes and model."""
    src = folder(tmp_path / "in", {"a.png": I.png(), "b.png": I.png((64, 64)), "c.png": I.png((48, 64))})
    out = tmp_path / "out"
    assert run(str(src), "-p", "make it red", "-o", str(out), "-q") == 0
    meta = imageio.read_metadata(out / "a.png")
    assert len(meta["request"]) == 64  # the request's digest, recorded in every output

    def edited(*args: str) -> list[str]:
        engine.calls.clear()
        assert run(str(src), "-o", str(out), "-q", *args) == 0
        return sorted(Path(c.parent or "").name for c in engine.calls)

    assert edited("-p", "make it red") == []  # the same request: nothing to do, nothing loaded
    assert "3 skipped" in capsys.readouterr().out
    assert edited("-p", "make it blue") == ["a.png", "b.png", "c.png"]  # a new prompt: all redone
    err = capsys.readouterr().err
    assert "redoing 3 whose outputs were made by another request" in err
    assert imageio.read_metadata(out / "a.png")["prompt"] == "make it blue"
    assert edited("-p", "make it blue") == []
    assert edited("-p", "make it blue", "--seed", "3") == ["a.png", "b.png", "c.png"]  # another parameter
    (src / "b.png").write_bytes(I.encode(I.pattern((64, 64), seed=1), "PNG"))
    assert edited("-p", "make it blue", "--seed", "3") == ["b.png"]  # another input under the same name
    assert edited("-p", "make it blue", "--seed", "3", "--model", "tiny-plus") == ["a.png", "b.png", "c.png"]


def test_resume_never_overwrites_a_file_it_did_not_write(tmp_path: Path, engine, capsys) -> None:
    src = folder(tmp_path / "in", {"a.png": I.png(), "b.png": I.png()})
    out = folder(tmp_path / "out", {"b.png": b"the user's own notes, not an image"})
    assert run(str(src), "-p", "x", "-o", str(out), "-q") == 1
    assert (out / "b.png").read_bytes() == b"the user's own notes, not an image"
    assert [Path(c.parent or "").name for c in engine.calls] == ["a.png"]
    err = capsys.readouterr().err
    assert f"b.png: {out / 'b.png'} exists and was not written by qedit; move it away" in err


def test_inputs_outside_the_size_rule_fail_alone(tmp_path: Path, engine, monkeypatch, capsys) -> None:
    """The service's 384-3072 px rule by default: a small file is a failure listed at the end, not a stop."""
    monkeypatch.delenv("QEDIT_MIN_SIDE")
    src = folder(tmp_path / "in", {"big.png": I.png((400, 384)), "small.png": I.png((64, 48))})
    assert run(str(src), "-p", "x", "-o", str(tmp_path / "out"), "-q") == 1
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["big.png"]
    assert "small.png: image width must be 384-3072 px, got 64 (64x48)" in capsys.readouterr().err
    assert run(str(src), "-p", "x", "-o", str(tmp_path / "out"), "-q", "--min-side", "48") == 0
