"""Tasks made directly in a store, for tests of the service's parts below the HTTP API."""

from __future__ import annotations

from qedit.params import EditParams
from qedit.service.records import Interface, NewTask, TaskOutput
from qedit.service.tasks import TaskStore


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
