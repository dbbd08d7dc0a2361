"""The worker on its own: claim -> engine -> files -> complete -> webhook, against a real store.

SQLite in ``tmp_path``, the dry-run ``InstantEngine`` (or, where timing matters, ``StepEngine``
below, which runs a hook inside the edit), the real webhook sender and a local receiver.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageOps

from qedit import imageio
from qedit.errors import EditCancelled
from qedit.models.protocol import CancelToken, EditedImage, EditEngine, EditRequest, EditResult, StepCallback
from qedit.service.instant import InstantEngine
from qedit.service.records import TaskOptions, TaskOutput, TaskStatus, WebhookState
from qedit.service.wiring import Core
from qedit.service.worker import Worker, worker_name
from tests.support.images import png_bytes
from tests.support.receiver import Receiver
from tests.support.tasks import BASE_URL, current, queue_edit

GREEN = (20, 160, 60)  # png_bytes()'s colour; the instant engine inverts it
INVERTED = (235, 95, 195)


class StepEngine:
    """Takes one step, calls ``during()``, then returns an inverted copy at once or, with
    ``until_cancelled``, keeps stepping (as a long denoise would) until its cancel token is set."""

    model_id = "step"
    max_images = 3

    def __init__(self, during: Callable[[], object], *, until_cancelled: bool = False) -> None:
        self.during = during
        self.until_cancelled = until_cancelled

    def edit(
        self, request: EditRequest, *, on_step: StepCallback | None = None, cancel: CancelToken | None = None
    ) -> EditResult:
        assert on_step is not None and cancel is not None
        on_step(1, 10, 0.0)
        self.during()
        deadline = time.monotonic() + 5
        while self.until_cancelled and not cancel.cancelled:
            assert time.monotonic() < deadline, "the worker never set the cancel token"
            on_step(2, 10, 0.0)
            time.sleep(0.02)
        if cancel.cancelled:
            raise EditCancelled()
        image = ImageOps.invert(request.images[-1].convert("RGB"))
        return EditResult(outputs=(EditedImage(image=image, seed=1, metadata={}),), model=self.model_id)


class Recording(InstantEngine):
    """The instant engine, keeping every request it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[EditRequest] = []

    def edit(self, request: EditRequest, **kw: object) -> EditResult:  # type: ignore[override]
        self.requests.append(request)
        return super().edit(request, **kw)  # type: ignore[arg-type]


def worker(core: Core, engine: EditEngine, on_webhook: Callable[[str], None] | None = None) -> Worker:
    return Worker(core, engine_factory=lambda settings: engine, name=worker_name("test"), on_webhook=on_webhook)


def output_files(core: Core) -> list[Path]:
    return sorted(p for p in (core.settings.data_dir / "outputs").rglob("*") if p.is_file())


def test_a_queued_task_completes_with_typed_outputs_under_the_data_dir_and_its_webhook_delivered(
    core: Core, receiver: Receiver
) -> None:
    tid = queue_edit(
        core, webhook_url=receiver.url + "/hook", num_images=2, seed=5, options=TaskOptions(output_format="webp")
    )
    w = worker(core, InstantEngine())
    assert not w.ready
    task = w.run_next()
    assert w.ready
    assert task is not None and task.id == tid
    assert task.status == TaskStatus.COMPLETED and task.attempt == 1 and task.worker == w.name
    assert task.error is None and task.error_reason is None and task.n_outputs == 2
    assert (task.progress_step, task.progress_total) == (8, 8)  # 4 steps per image, the last one recorded
    assert {"denoise", "inference", "queue_wait"} <= set(task.timings)
    data_dir = core.settings.data_dir.resolve()
    for i, out in enumerate(task.outputs):
        assert isinstance(out, TaskOutput)
        assert (out.name, out.format, out.seed, out.width, out.height) == (f"{i}-a1.webp", "webp", 5 + i, 480, 400)
        path = core.storage.absolute(out.file)
        assert path.is_relative_to(data_dir / "outputs") and path.is_file()
        assert imageio.sniff_format(path) == "webp"
        pixel = Image.open(path).convert("RGB").getpixel((10, 10))
        assert max(abs(a - b) for a, b in zip(pixel, INVERTED, strict=True)) <= 2  # webp is lossy
        assert out.metadata["task"] == tid and out.metadata["seed"] == str(5 + i)
        assert imageio.read_metadata(path)["prompt"] == "invert it"  # embedded in the file too
    # the pending webhook went out right away, from the worker
    assert task.webhook_state == WebhookState.DELIVERED
    (got,) = receiver.received
    body = json.loads(got.body)
    assert got.path == "/hook" and body["id"] == tid and body["status"] == "completed"
    assert [o["url"].startswith(f"{BASE_URL}/v1/files/{tid}/") for o in body["outputs"]] == [True, True]
    assert [a.status_code for a in core.outbox.attempts(tid)] == [200]
    assert w.run_next() is None  # nothing left to run


def test_run_next_with_an_id_runs_that_task_not_the_oldest(core: Core) -> None:
    older, wanted = queue_edit(core, "first"), queue_edit(core, "second")
    task = worker(core, InstantEngine()).run_next(wanted)
    assert task is not None and task.id == wanted and task.status == TaskStatus.COMPLETED
    assert current(core, older).status == TaskStatus.CREATED


def test_a_fail_prompt_fails_the_task_with_reason_engine_error(core: Core, receiver: Receiver) -> None:
    tid = queue_edit(core, "please [fail] now", webhook_url=receiver.url)
    task = worker(core, InstantEngine()).run_next()
    assert task is not None and task.id == tid
    assert task.status == TaskStatus.FAILED and task.error_reason == "engine_error"
    assert "InstantEditFailed" in (task.error or "") and "[fail]" in (task.error or "")
    assert task.outputs == [] and output_files(core) == []
    assert task.webhook_state == WebhookState.DELIVERED
    assert json.loads(receiver.received[0].body)["status"] == "failed"


def test_an_engine_refusing_the_input_fails_the_task_with_reason_invalid_input(core: Core) -> None:
    queue_edit(core, images=[png_bytes(), png_bytes()])
    task = worker(core, InstantEngine(max_images=1)).run_next()
    assert task is not None and task.status == TaskStatus.FAILED and task.error_reason == "invalid_input"
    assert (task.error or "").startswith("images: ") and "at most 1 image(s), got 2" in (task.error or "")


def test_cancel_requested_mid_run_ends_cancelled_with_no_outputs(core: Core) -> None:
    tid = queue_edit(core, webhook_url="http://127.0.0.1:9/never")
    sent: list[str] = []
    engine = StepEngine(lambda: core.tasks.request_cancel(tid), until_cancelled=True)
    task = worker(core, engine, on_webhook=sent.append).run_next()
    assert task is not None and task.status == TaskStatus.CANCELLED and task.error_reason == "cancelled"
    assert task.outputs == [] and output_files(core) == []
    assert task.webhook_state == WebhookState.PENDING and sent == [tid]  # handed to the deliverer


def test_a_worker_that_lost_its_lease_does_not_complete_and_discards_its_files(core: Core) -> None:
    tid = queue_edit(core, webhook_url="http://127.0.0.1:9/never")
    sent: list[str] = []

    def taken_over() -> None:  # the lease ran out while the engine ran; another worker claimed the task
        assert core.tasks.expire_lease(tid, 1)
        assert core.tasks.claim("other@elsewhere:1:x", 60, task_id=tid) is not None

    worker(core, StepEngine(taken_over), on_webhook=sent.append).run_next()
    task = core.tasks.get(tid)
    assert task is not None
    assert task.status == TaskStatus.PROCESSING and task.attempt == 2 and task.worker == "other@elsewhere:1:x"
    assert task.outputs == [] and output_files(core) == []  # 0-a1.png was written, then removed
    assert sent == [] and task.webhook_state == WebhookState.NONE
    assert core.tasks.complete(tid, 2, [], {}, 0.0)  # the owner's attempt still can


def test_a_lease_lost_mid_run_stops_the_engine_without_cancelling_the_task(core: Core) -> None:
    tid = queue_edit(core)

    def taken_over() -> None:
        assert core.tasks.expire_lease(tid, 1)
        assert core.tasks.claim("other@elsewhere:1:x", 60, task_id=tid) is not None

    worker(core, StepEngine(taken_over, until_cancelled=True)).run_next()  # the heartbeat stops it
    task = core.tasks.get(tid)
    assert task is not None and task.status == TaskStatus.PROCESSING and task.attempt == 2
    assert task.error is None and output_files(core) == []


def test_an_input_chained_from_a_task_output_carries_its_parent_and_history(core: Core) -> None:
    engine = Recording()
    w = worker(core, engine)
    first = w.run_next(queue_edit(core, "make it blue", seed=1))
    assert first is not None
    data = core.storage.absolute(first.outputs[0].file).read_bytes()
    second_id = queue_edit(core, "now add a hat", images=[data], parent_id=first.id, source=f"task://{first.id}/0")
    second = w.run_next(second_id)
    assert second is not None and second.status == TaskStatus.COMPLETED and second.parent_id == first.id
    request = engine.requests[-1]
    assert request.parent == f"task://{first.id}/0"
    assert [h["prompt"] for h in request.history] == ["make it blue"]
    meta = imageio.read_metadata(core.storage.absolute(second.outputs[0].file))
    assert meta["parent"] == f"task://{first.id}/0"
    assert [h["prompt"] for h in json.loads(meta["chain"])] == ["make it blue", "now add a hat"]
    assert Image.open(core.storage.absolute(second.outputs[0].file)).convert("RGB").getpixel((0, 0)) == GREEN
