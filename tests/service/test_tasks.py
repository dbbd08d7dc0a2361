"""The task store's guarantees, on SQLite and on Postgres: one claim per task, one completion per task."""

from __future__ import annotations

import threading
from collections import Counter

from qedit.service.records import TaskStatus
from qedit.service.tasks import TaskStore
from tests.support.tasks import add, output


def test_concurrent_claims_hand_each_task_to_exactly_one_worker(tasks: TaskStore) -> None:
    ids = add(tasks, 60)
    claimed: list[str] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        while True:
            task = tasks.claim(name, lease_seconds=60)
            if task is None:
                return
            with lock:
                claimed.append(task.id)
            assert tasks.complete(task.id, task.attempt, [], {}, 0.0)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(claimed) == Counter(ids)  # every task once, none twice
    assert tasks.counts_by_status() == {"completed": 60}


def test_claims_are_oldest_first(tasks: TaskStore) -> None:
    ids = add(tasks, 3)
    assert [tasks.claim("w", 60).id for _ in ids] == ids  # type: ignore[union-attr]


def test_a_worker_that_lost_its_lease_cannot_complete(tasks: TaskStore) -> None:
    (tid,) = add(tasks)
    stale = tasks.claim("old", lease_seconds=-1)  # its lease is over at once: as if it hung or died
    assert stale is not None
    fresh = tasks.claim("new", lease_seconds=60)
    assert fresh is not None and fresh.id == tid and fresh.attempt == 2
    assert not tasks.heartbeat(tid, stale.attempt, 60).owned
    assert not tasks.complete(tid, stale.attempt, [output("stale")], {}, 1.0)
    assert not tasks.fail(tid, stale.attempt, "boom", "engine_error")
    assert tasks.complete(tid, fresh.attempt, [output("fresh")], {}, 1.0)
    assert not tasks.complete(tid, fresh.attempt, [output("again")], {}, 1.0)  # completes once
    task = tasks.get(tid)
    assert task is not None and task.status == TaskStatus.COMPLETED and task.outputs == [output("fresh")]


def test_cancel_queued_is_immediate_and_running_is_asked(tasks: TaskStore) -> None:
    queued, running = add(tasks, 2)
    task = tasks.claim("w", 60, task_id=running)
    assert task is not None
    assert tasks.request_cancel(queued).status == TaskStatus.CANCELLED  # type: ignore[union-attr]
    assert tasks.claim("w", 60, task_id=queued) is None  # never runs
    assert tasks.request_cancel(running).status == TaskStatus.PROCESSING  # type: ignore[union-attr]
    assert tasks.heartbeat(running, task.attempt, 60, 3, 10).cancel_requested
    assert tasks.finish_cancelled(running, task.attempt)
    assert tasks.get(running).status == TaskStatus.CANCELLED  # type: ignore[union-attr]


def test_list_pages_newest_first(tasks: TaskStore) -> None:
    ids = add(tasks, 5)
    page = tasks.list_tasks(limit=2)
    assert [t.id for t in page] == ids[::-1][:2]
    rest = tasks.list_tasks(limit=10, before=(page[-1].created_at, page[-1].id))
    assert [t.id for t in rest] == ids[::-1][2:]


def test_queued_lists_tasks_waiting_for_a_first_run_oldest_first(tasks: TaskStore) -> None:
    running, cancelled, a, b, c = add(tasks, 5)
    assert tasks.claim("w", 60, task_id=running) is not None
    tasks.request_cancel(cancelled)
    assert [t.id for t in tasks.queued()] == [a, b, c]
    assert [t.id for t in tasks.queued(exclude=[a, running])] == [b, c]
    assert [t.id for t in tasks.queued(limit=1)] == [a]
