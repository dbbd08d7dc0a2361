"""Tasks made directly in a store, for tests of the service's parts below the HTTP API."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from qedit import imageio
from qedit.params import EditParams
from qedit.service.records import Interface, NewTask, TaskInput, TaskOptions, TaskOutput, TaskRecord
from qedit.service.tasks import TaskStore
from qedit.service.workers import served_model
from tests.support.images import png_bytes

if TYPE_CHECKING:
    from qedit.service.wiring import Core

BASE_URL = "http://qedit.test"  # what result URLs start with; nothing listens there


def add(tasks: TaskStore, n: int = 1, key_id: str | None = None, **kw: object) -> list[str]:
    return [
        tasks.add(
            NewTask(
                interface=Interface.NATIVE,
                model="instant",
                params=EditParams(prompt=f"t{i}"),
                inputs=[],
                base_url="http://x",
                key_id=key_id,
                **kw,  # type: ignore[arg-type]
            )
        ).id
        for i in range(n)
    ]


def output(name: str) -> TaskOutput:
    return TaskOutput(name=name, file=f"outputs/{name}.png", seed=0, width=8, height=8, format="png")


def queue_edit(
    core: Core,
    prompt: str = "invert it",
    *,
    images: list[bytes] | None = None,
    key_id: str | None = None,
    interface: Interface = Interface.NATIVE,
    webhook_url: str | None = None,
    options: TaskOptions | None = None,
    parent_id: str | None = None,
    source: str = "upload",
    **params: object,
) -> str:
    """A queued edit as the API leaves it: input files written under the data dir, the task committed.

    ``images`` default to one flat 480x400 PNG; ``parent_id`` and ``source`` describe the last one.
    """
    task_id = uuid.uuid4().hex
    images = images or [png_bytes()]
    inputs = []
    for n, data in enumerate(images):
        last = n == len(images) - 1
        name = f"{n}.{imageio.EXTENSIONS[imageio.sniff_format(data)]}"
        w, h = imageio.load_image(data).size
        inputs.append(
            TaskInput(
                path=core.storage.write_input(task_id, name, data),
                source=source if last else "upload",
                width=w,
                height=h,
                parent_id=parent_id if last else None,
            )
        )
    core.tasks.add(
        NewTask(
            id=task_id,
            interface=interface,
            model=served_model(core.settings.model),  # as the API stores it: the model a worker of core serves
            params=EditParams(prompt=prompt, **params),  # type: ignore[arg-type]
            inputs=inputs,
            base_url=BASE_URL,
            key_id=key_id,
            parent_id=parent_id,
            options=options or TaskOptions(),
            webhook_url=webhook_url,
        )
    )
    return task_id


def current(core: Core, task_id: str) -> TaskRecord:
    """The task as the store has it now (it must exist)."""
    task = core.tasks.get(task_id)
    assert task is not None, f"task {task_id} is not in the store"
    return task
