"""Sessions: chained edits whose untouched pixels stay the original's over any number of rounds.

The engine is ``tests.support.engines.DriftEngine``, a stand-in that behaves like a VAE round-trip
(the whole image drifts a little every round) plus a real local change, and that finishes the way
``Engine.edit`` does, so the session's promise is tested without model weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from qedit import imageio, masks, sessions
from qedit.errors import InvalidInput, QeditError
from qedit.params import Box, EditParams
from qedit.sessions import EditSession
from tests.support.engines import DriftEngine
from tests.support.images import scene


def rect_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=255)
    return mask


def arr(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


ROUNDS = [(20, 100, 60, 140), (180, 100, 230, 150), (100, 20, 140, 60), (60, 130, 120, 180), (200, 10, 250, 50)]


@pytest.fixture
def session(tmp_path: Path) -> EditSession:
    return EditSession.create("poster", scene(), directory=tmp_path / "poster.qedit", source="scene.png")


# -- invariance over rounds ---------------------------------------------------------------------


@pytest.mark.parametrize("careless", [False, True], ids=["engine-composites", "engine-does-not"])
def test_five_masked_rounds_keep_untouched_pixels_identical_to_step_0(session: EditSession, careless: bool) -> None:
    size = session.step(0).size
    may_change = np.zeros((size[1], size[0]), bool)
    for box in ROUNDS:
        engine = DriftEngine(paint=box, careless=careless)
        mask = rect_mask(size, box)
        params = EditParams(prompt="repaint the marked area", seed=3, mask_feather=4)
        sessions.edit(session, engine, params, mask)
        may_change |= ~masks.prepare_edit_mask(mask, size, 0, 4).keep
    step0, step5 = arr(session.image(0)), arr(session.image(5))
    assert session.head == 5 and [s.index for s in session.chain()] == [0, 1, 2, 3, 4, 5]
    assert np.abs(step5 - step0)[~may_change].max() == 0
    x0, y0, x1, y1 = ROUNDS[-1]
    assert (step5[y0:y1, x0:x1] != step0[y0:y1, x0:x1]).any()  # the last edit is there


def test_five_preserve_rounds_keep_untouched_pixels_identical_to_step_0(session: EditSession) -> None:
    size = session.step(0).size
    painted = np.zeros((size[1], size[0]), bool)
    for box in ROUNDS:
        sessions.edit(session, DriftEngine(paint=box), EditParams(prompt="add a patch", seed=5, preserve="auto"))
        painted[box[1] : box[3], box[0] : box[2]] = True
    step0, step5 = arr(session.image(0)), arr(session.image(5))
    band = masks.dilate(painted, 20)
    assert np.abs(step5 - step0)[~band].max() == 0


def test_without_confinement_the_drift_compounds(session: EditSession) -> None:
    """The reference's behaviour, for comparison: every round re-encodes everything."""
    size = session.step(0).size
    for box in ROUNDS:
        sessions.edit(session, DriftEngine(paint=box), EditParams(prompt="add a patch", seed=5))
    painted = np.zeros((size[1], size[0]), bool)
    for box in ROUNDS:
        painted[box[1] : box[3], box[0] : box[2]] = True
    diff = np.abs(arr(session.image(5)) - arr(session.image(0)))[~masks.dilate(painted, 20)]
    assert diff.mean() > 3 and diff.max() > 100


def test_box_mask_rounds_leave_no_outline_outside_the_boxes(session: EditSession) -> None:
    size = session.step(0).size
    boxes = (Box(x0=100, y0=80, x1=140, y1=120, colour="red"),)
    engine = DriftEngine(paint=(105, 85, 135, 115))
    sessions.edit(session, engine, EditParams(prompt="change the text in the red box", boxes=boxes, box_mask=True))
    sessions.edit(session, engine, EditParams(prompt="again", boxes=boxes, box_mask=True))
    keep = masks.prepare_edit_mask(masks.boxes_mask(size, boxes), size, 0, 4).keep
    assert np.array_equal(arr(session.image(2))[keep], arr(session.image(0))[keep])
    assert engine.calls[0].images[-1].getpixel((100, 80)) == session.image(0).getpixel((100, 80))  # unboxed input


# -- steps, HEAD, branches ----------------------------------------------------------------------


def test_new_session_keeps_the_original_pixels_and_writes_the_layout(tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    scene().save(src)
    s = EditSession.create("card", imageio.load_image(src), directory=tmp_path / "card.qedit", source=str(src))
    assert np.array_equal(arr(s.image(0)), arr(Image.open(src).convert("RGB")))
    data = json.loads((tmp_path / "card.qedit" / "session.json").read_text())
    assert data["head"] == 0 and data["name"] == "card"
    assert data["steps"][0]["image"] == "steps/000.png" and data["steps"][0]["parent"] is None
    with pytest.raises(InvalidInput, match="already exists"):
        EditSession.create("card", scene(), directory=tmp_path / "card.qedit")


def test_default_directory_is_name_dot_qedit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    EditSession.create("hero", scene())
    assert (tmp_path / "hero.qedit" / "session.json").is_file()
    assert EditSession.open("hero").steps[0].size == (256, 192)


@pytest.mark.parametrize("name", ["", "../x", ".hidden", "a b", "x" * 65])
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidInput) as e:
        EditSession.create(name, scene(), directory=tmp_path / "s")
    assert e.value.field == "name"


def test_steps_record_params_seed_model_and_parent(session: EditSession) -> None:
    engine = DriftEngine()
    params = EditParams(prompt="make the sign blue", seed=-1, mask_grow=2)
    (step,) = sessions.edit(session, engine, params, rect_mask((256, 192), (90, 70, 150, 130)))
    reopened = EditSession.open("poster", session.directory)
    recorded = reopened.step(1)
    assert recorded == step
    assert recorded.parent == 0 and recorded.model == "drift" and recorded.seed == 7
    assert recorded.edit_params == params
    assert recorded.mask == "masks/001.png"
    assert np.array_equal(
        np.asarray(Image.open(session.path(recorded.mask))), np.asarray(rect_mask((256, 192), (90, 70, 150, 130)))
    )
    sessions.edit(session, engine, EditParams(prompt="now red"))
    assert [h["prompt"] for h in engine.calls[1].history] == ["make the sign blue"]
    assert engine.calls[1].images[-1].tobytes() == session.image(1).tobytes()  # edits HEAD


def test_checkout_branches_and_undo_follows_parents(session: EditSession) -> None:
    engine = DriftEngine()
    for prompt in ("one", "two"):
        sessions.edit(session, engine, EditParams(prompt=prompt))
    session.checkout(1)
    (branch,) = sessions.edit(session, engine, EditParams(prompt="three"))
    assert branch.index == 3 and branch.parent == 1
    assert [s.index for s in session.chain()] == [0, 1, 3]
    assert engine.calls[-1].images[-1].tobytes() == session.image(1).tobytes()
    assert session.undo().index == 1 and session.undo().index == 0
    with pytest.raises(InvalidInput, match="nothing to undo"):
        session.undo()
    with pytest.raises(InvalidInput, match="step must be 0-3, got 9") as e:
        session.checkout(9)
    assert e.value.field == "step"
    assert EditSession.open("poster", session.directory).head == 0


def test_several_outputs_become_sibling_steps(session: EditSession) -> None:
    steps = sessions.edit(session, DriftEngine(), EditParams(prompt="variants", num_images=3, seed=10))
    assert [(s.index, s.parent, s.seed) for s in steps] == [(1, 0, 10), (2, 0, 11), (3, 0, 12)]
    assert session.head == 1


def test_bad_mask_or_box_fails_before_the_engine_runs(session: EditSession) -> None:
    engine = DriftEngine()
    with pytest.raises(InvalidInput, match="all black"):
        sessions.edit(session, engine, EditParams(prompt="x"), Image.new("L", (256, 192), 0))
    with pytest.raises(InvalidInput) as e:
        sessions.edit(session, engine, EditParams(prompt="x", boxes=(Box(x0=0, y0=0, x1=300, y1=10),)))
    assert e.value.field == "boxes[0]"
    assert engine.calls == [] and len(session.steps) == 1


def test_a_crash_while_recording_leaves_the_session_as_it_was(
    session: EditSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions.edit(session, DriftEngine(), EditParams(prompt="one"))
    before = (session.directory / "session.json").read_bytes()
    real = imageio.encode_image
    calls = {"n": 0}

    def failing(*args: Any, **kwargs: Any) -> bytes:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(imageio, "encode_image", failing)
    with pytest.raises(KeyboardInterrupt):
        sessions.edit(session, DriftEngine(), EditParams(prompt="two", num_images=2))
    monkeypatch.undo()
    assert (session.directory / "session.json").read_bytes() == before
    again = EditSession.open("poster", session.directory)
    assert again.head == 1 and len(again.steps) == 2
    assert not list(session.directory.rglob("*.tmp"))


def test_a_corrupt_session_file_is_reported_not_raised_as_a_traceback(session: EditSession) -> None:
    (session.directory / "session.json").write_text("{not json")
    with pytest.raises(QeditError, match="cannot read"):
        EditSession.open("poster", session.directory)
    with pytest.raises(InvalidInput, match="no session at"):
        EditSession.open("other", session.directory.parent / "missing.qedit")


# -- export -------------------------------------------------------------------------------------


def test_export_writes_the_chain_to_head_and_its_steps(session: EditSession, tmp_path: Path) -> None:
    engine = DriftEngine()
    sessions.edit(session, engine, EditParams(prompt="one", seed=1), rect_mask((256, 192), (10, 10, 50, 50)))
    sessions.edit(session, engine, EditParams(prompt="dead end", seed=2))
    session.checkout(1)
    sessions.edit(session, engine, EditParams(prompt="three", seed=3))
    out = tmp_path / "export"
    paths = session.export(out)
    assert [p.name for p in paths] == ["000.png", "001.png", "002.png"]
    doc = json.loads((out / "steps.json").read_text())
    assert [(s["position"], s["index"], s["parent"]) for s in doc["steps"]] == [(0, 0, None), (1, 1, 0), (2, 3, 1)]
    assert [s["params"]["prompt"] for s in doc["steps"][1:]] == ["one", "three"]
    assert doc["steps"][1]["mask"] == "001-mask.png" and (out / "001-mask.png").is_file()
    assert (out / "002.png").read_bytes() == session.path("steps/003.png").read_bytes()
    assert imageio.read_metadata(out / "002.png")["prompt"] == "three"
    with pytest.raises(InvalidInput, match="not an empty directory") as e:
        session.export(out)
    assert e.value.field == "out_dir"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
