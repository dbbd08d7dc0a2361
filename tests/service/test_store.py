"""The task store's guarantees, on SQLite and on Postgres: one claim per task, one completion per task."""

from __future__ import annotations

import threading
import time
from collections import Counter

from qedit.service.store import ANY_KEY, NewTask, TaskStore


def _add(store: TaskStore, n: int = 1, key_id: str | None = None, **kw: object) -> list[str]:
    return [
        store.add(
            NewTask(
                interface="native",
                model="instant",
                params={"prompt": f"t{i}"},
                inputs=[],
                base_url="http://x",
                key_id=key_id,
                **kw,
            )
        ).id
        for i in range(n)
    ]  # type: ignore[arg-type]


def test_concurrent_claims_hand_each_task_to_exactly_one_worker(store: TaskStore) -> None:
    ids = _add(store, 60)
    claimed: list[str] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        while True:
            task = store.claim(name, lease_seconds=60)
            if task is None:
                return
            with lock:
                claimed.append(task.id)
            assert store.complete(task.id, task.attempt, [], {}, 0.0)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(claimed) == Counter(ids)  # every task once, none twice
    assert store.counts_by_status() == {"completed": 60}


def test_claims_are_oldest_first(store: TaskStore) -> None:
    ids = _add(store, 3)
    assert [store.claim("w", 60).id for _ in ids] == ids  # type: ignore[union-attr]


def test_a_worker_that_lost_its_lease_cannot_complete(store: TaskStore) -> None:
    (tid,) = _add(store)
    stale = store.claim("old", lease_seconds=-1)  # its lease is over at once: as if it hung or died
    assert stale is not None
    fresh = store.claim("new", lease_seconds=60)
    assert fresh is not None and fresh.id == tid and fresh.attempt == 2
    assert not store.heartbeat(tid, stale.attempt, 60).owned
    assert not store.complete(tid, stale.attempt, [{"name": "stale"}], {}, 1.0)
    assert not store.fail(tid, stale.attempt, "boom", "engine_error")
    assert store.complete(tid, fresh.attempt, [{"name": "fresh"}], {}, 1.0)
    assert not store.complete(tid, fresh.attempt, [{"name": "again"}], {}, 1.0)  # completes once
    task = store.get(tid)
    assert task is not None and task.status == "completed" and task.outputs == [{"name": "fresh"}]


def test_cancel_queued_is_immediate_and_running_is_asked(store: TaskStore) -> None:
    queued, running = _add(store, 2)
    task = store.claim("w", 60, task_id=running)
    assert task is not None
    assert store.request_cancel(queued).status == "cancelled"  # type: ignore[union-attr]
    assert store.claim("w", 60, task_id=queued) is None  # never runs
    assert store.request_cancel(running).status == "processing"  # type: ignore[union-attr]
    assert store.heartbeat(running, task.attempt, 60, 3, 10).cancel_requested
    assert store.finish_cancelled(running, task.attempt)
    assert store.get(running).status == "cancelled"  # type: ignore[union-attr]


def test_keys_scope_tasks_and_usage(store: TaskStore) -> None:
    key, secret = store.create_key("alice")
    other, _ = store.create_key("bob")
    assert store.key_by_secret(secret) == key and store.key_by_secret("qk_nope") is None
    mine = _add(store, 2, key_id=key.id)
    _add(store, 1, key_id=other.id)
    assert store.get(mine[0], other.id) is None and store.get(mine[0], key.id) is not None
    assert {t.id for t in store.list_tasks(key.id)} == set(mine)
    assert len(store.list_tasks(ANY_KEY)) == 3
    for tid in mine:
        t = store.claim("w", 60, task_id=tid)
        assert t is not None
        store.complete(tid, t.attempt, [{"n": 1}, {"n": 2}], {}, 1.5)
    usage = store.usage(key.id)
    assert (usage.tasks, usage.completed, usage.images, usage.compute_seconds) == (2, 2, 4, 3.0)
    assert store.revoke_key(key.prefix) is not None and store.key_by_secret(secret) is None


def test_webhook_pending_is_set_with_the_final_state(store: TaskStore) -> None:
    (with_hook,) = _add(store, webhook_url="https://example.com/h")
    (without,) = _add(store)
    for tid in (with_hook, without):
        t = store.claim("w", 60, task_id=tid)
        store.complete(tid, t.attempt, [], {}, 0.0)  # type: ignore[union-attr]
    assert store.pending_webhooks() == [with_hook]
    assert store.set_webhook_state(with_hook, "sending", expect="pending")
    assert not store.set_webhook_state(with_hook, "sending", expect="pending")  # one deliverer
    assert store.reset_stuck_webhooks(time.time() + 1) == 1 and store.pending_webhooks() == [with_hook]


def test_list_pages_newest_first(store: TaskStore) -> None:
    ids = _add(store, 5)
    page = store.list_tasks(limit=2)
    assert [t.id for t in page] == ids[::-1][:2]
    rest = store.list_tasks(limit=10, before=(page[-1].created_at, page[-1].id))
    assert [t.id for t in rest] == ids[::-1][2:]
