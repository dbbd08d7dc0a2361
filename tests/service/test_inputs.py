"""The input reader on its own: every way a client names an image, and every refusal naming the field.

Task references are made by really running tasks (worker + instant engine) into the store; the
only HTTP here is one fetch from a local image host.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from qedit.errors import InvalidInput
from qedit.request_check import check_image_count
from qedit.service.inputs import InputReader
from qedit.service.instant import InstantEngine
from qedit.service.records import TaskRecord
from qedit.service.wiring import Core
from qedit.service.worker import Worker
from tests.support import images as I
from tests.support.images import b64, data_uri, png_bytes
from tests.support.receiver import Receiver
from tests.support.tasks import queue_edit

PNG = png_bytes()  # 480x400, within the default limits (384-3072 px a side)
BIG_PNG = I.encode(I.pattern((480, 400)), "PNG")  # about 4 KB: over a 2 KB limit


def reader(core: Core) -> InputReader:
    return InputReader(core.settings, core.tasks, core.storage)


def completed(core: Core, key_id: str | None = "key-a", **kw: Any) -> TaskRecord:
    tid = queue_edit(core, key_id=key_id, **kw)
    task = Worker(core, engine_factory=lambda s: InstantEngine()).run_next(tid)
    assert task is not None and task.status == "completed"
    return task


def stored(core: Core, task: TaskRecord, n: int = 0) -> bytes:
    return core.storage.absolute(task.outputs[n].file).read_bytes()


# -- the ways in --------------------------------------------------------------------------------


def test_a_data_uri_is_read_and_sniffed(core: Core) -> None:
    got = reader(core).from_string(data_uri(PNG), "images[0]")
    assert (got.data, got.ext, got.size, got.source) == (PNG, "png", (480, 400), "data-uri")
    assert got.parent_id is None and got.mask is None


def test_bare_base64_is_read_even_wrapped_over_lines(core: Core) -> None:
    text = b64(PNG)
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    for source in (text, f"  {wrapped}\n"):
        got = reader(core).from_string(source, "image")
        assert got.data == PNG and got.source == "base64" and got.size == (480, 400)


def test_an_upload_is_read_with_its_real_format(core: Core) -> None:
    jpeg = png_bytes(fmt="JPEG")
    got = reader(core).from_upload(jpeg, "image")
    assert (got.data, got.ext, got.size, got.source) == (jpeg, "jpg", (480, 400), "upload")


def test_a_mask_is_decoded_to_a_grey_image(core: Core) -> None:
    got = reader(core).from_upload(I.gray_png(200, (480, 400)), "mask", mask=True)
    assert got.mask is not None and got.mask.mode == "L" and got.mask.size == (480, 400)


def test_an_image_url_is_fetched(core: Core) -> None:
    host = Receiver(files={"/a.png": PNG})
    try:
        got = reader(core).from_string(host.url + "/a.png", "image")
    finally:
        host.close()
    assert got.data == PNG and got.source == "url" and got.parent_id is None


# -- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "source", "message"),
    [
        pytest.param(
            "upload", png_bytes((100, 400)), "image width must be 384-3072 px, got 100 (100x400)", id="narrow"
        ),
        pytest.param(
            "upload", png_bytes((480, 200)), "image height must be 384-3072 px, got 200 (480x200)", id="short"
        ),
        pytest.param("upload", png_bytes((3100, 400)), "image width must be 384-3072 px, got 3100", id="wide"),
        pytest.param("upload", b"hello, this is not a picture", "not an image file in a known format", id="not-image"),
        pytest.param("upload", I.gif((400, 400)), "unsupported format GIF", id="gif"),
        pytest.param("upload", I.truncated_png((400, 400)), "file is truncated", id="truncated"),
        pytest.param("upload", b"", "image is empty (0 bytes)", id="empty-upload"),
        pytest.param("string", "   ", "is empty; expected an https URL", id="blank"),
        pytest.param(
            "string", "not//base64!", "is neither an https URL, a data URI, task://ID/N nor valid base64", id="junk"
        ),
        pytest.param(
            "string", "data:image/png," + b64(PNG), "data URI must be data:<type>;base64,<data>", id="data-uri"
        ),
        pytest.param("string", "task://1234/0", "expected task://<32 hex id>/<output index>", id="bad-task-ref"),
        pytest.param("string", "ftp://example.com/a.png", "URL scheme must be https or http", id="ftp"),
    ],
)
def test_a_bad_image_is_refused_naming_the_field(core: Core, kind: str, source: Any, message: str) -> None:
    r = reader(core)
    with pytest.raises(InvalidInput) as e:
        if kind == "upload":
            r.from_upload(source, "images[1]")
        else:
            r.from_string(source, "images[1]")
    assert e.value.field == "images[1]" and e.value.status == 400
    assert message in e.value.message and str(e.value).startswith("images[1]: ")


def test_too_many_bytes_are_refused_in_every_form(make_core: Any) -> None:
    core: Core = make_core(max_input_bytes=2048)
    r = reader(core)
    assert len(BIG_PNG) > 2048
    with pytest.raises(InvalidInput, match=f"image is {len(BIG_PNG)} bytes, at most 2048 allowed") as e:
        r.from_upload(BIG_PNG, "image")
    assert e.value.field == "image"
    for source in (b64(BIG_PNG), data_uri(BIG_PNG)):  # refused before decoding the base64
        with pytest.raises(InvalidInput, match=r"image is about \d+ bytes, at most 2048 allowed") as e:
            r.from_string(source, "images[0]")
        assert e.value.field == "images[0]"


def test_the_image_count_is_checked() -> None:
    """The count rule the submit path applies before reading any source (``request_check``)."""
    check_image_count(3, max_images=3, model="m")
    with pytest.raises(InvalidInput, match="at least 1 image is needed, got 0"):
        check_image_count(0, max_images=3, model="m")
    with pytest.raises(InvalidInput, match=re.escape("model m takes at most 3 image(s), got 4")) as e:
        check_image_count(4, max_images=3, model="m")
    assert e.value.field == "images"


# -- task:// references -------------------------------------------------------------------------


def test_a_completed_tasks_output_is_read_with_its_parent(core: Core) -> None:
    task = completed(core, num_images=2)
    r = reader(core)
    first = r.from_string(f"task://{task.id}/0", "images[0]", "key-a")
    assert first.data == stored(core, task, 0) and first.parent_id == task.id
    assert first.source == f"task://{task.id}/0" and first.size == (480, 400)
    assert r.from_string(f"task://{task.id}", "images[0]", "key-a").data == first.data  # index 0 by default
    assert r.from_string(f"task://{task.id}/1", "images[0]", "key-a").data == stored(core, task, 1)
    assert r.from_string(f"task://{task.id}/1", "images[0]").parent_id == task.id  # local mode: any key


def test_another_keys_task_is_not_found_like_a_task_that_does_not_exist(core: Core) -> None:
    task = completed(core, key_id="key-a")
    r = reader(core)
    answers = []
    for tid in (task.id, uuid.uuid4().hex):
        with pytest.raises(InvalidInput) as e:
            r.from_string(f"task://{tid}/0", "image", "key-b")
        assert e.value.status == 404 and e.value.field == "image"
        answers.append(e.value.message.replace(tid, "ID"))
    assert answers == ["task ID not found"] * 2  # nothing tells the two apart


def test_an_unfinished_task_is_a_conflict(core: Core) -> None:
    queued = queue_edit(core, key_id="key-a")
    running = queue_edit(core, key_id="key-a")
    assert core.tasks.claim("w@host:1:x", 60, task_id=running) is not None
    for tid, status in ((queued, "created"), (running, "processing")):
        with pytest.raises(InvalidInput, match=f"is {status}, only a completed task's outputs can be used") as e:
            reader(core).from_string(f"task://{tid}/0", "image", "key-a")
        assert e.value.status == 409


def test_an_output_index_out_of_range_is_refused(core: Core) -> None:
    task = completed(core)
    with pytest.raises(InvalidInput, match=r"has 1 output\(s\) \(0-0\), got index 3") as e:
        reader(core).from_string(f"task://{task.id}/3", "image", "key-a")
    assert e.value.status == 400 and e.value.field == "image"


def test_expired_or_missing_outputs_are_gone(core: Core) -> None:
    expired, missing = completed(core), completed(core)
    core.tasks.mark_files_expired([expired.id])
    core.storage.absolute(missing.outputs[0].file).unlink()
    for task, message in ((expired, "outputs have expired"), (missing, "output 0 is no longer stored")):
        with pytest.raises(InvalidInput, match=message) as e:
            reader(core).from_string(f"task://{task.id}/0", "image", "key-a")
        assert e.value.status == 410


# -- our own file URLs --------------------------------------------------------------------------


def test_own_signed_file_url_is_read_locally_not_over_http(make_core: Any) -> None:
    core: Core = make_core(allow_private_urls=False, allow_http_urls=False)  # production policy: https only
    task = completed(core)
    url = core.storage.url("http://qedit.internal:8000", task.id, task.outputs[0].name, task.finished_at)
    r = reader(core)
    got = r.from_string(url, "image", "key-a")  # http and an internal host: fetching it would be refused
    assert got.data == stored(core, task) and got.source == "url" and got.parent_id == task.id
    other = r.from_string(url, "image", "key-b")  # the signature is the proof; the parent is not shown
    assert other.data == got.data and other.parent_id is None
    for forged in (url.replace("sig=", "sig=0"), url.replace(task.outputs[0].name, "1-a1.png")):
        with pytest.raises(InvalidInput, match="URL scheme must be https"):  # not ours: an ordinary URL
            r.from_string(forged, "image", "key-a")
