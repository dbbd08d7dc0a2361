"""API keys: secrets kept as hashes, tasks scoped to their key, usage counted from the tasks."""

from __future__ import annotations

from qedit.service.keys import KeyStore
from qedit.service.tasks import ANY_KEY, TaskStore
from tests.support.tasks import add, output


def test_keys_scope_tasks_and_usage(tasks: TaskStore, keys: KeyStore) -> None:
    key, secret = keys.create("alice")
    other, _ = keys.create("bob")
    assert keys.by_secret(secret) == key and keys.by_secret("qk_nope") is None
    mine = add(tasks, 2, key_id=key.id)
    add(tasks, 1, key_id=other.id)
    assert tasks.get(mine[0], other.id) is None and tasks.get(mine[0], key.id) is not None
    assert {t.id for t in tasks.list_tasks(key.id)} == set(mine)
    assert len(tasks.list_tasks(ANY_KEY)) == 3
    for tid in mine:
        t = tasks.claim("w", 60, task_id=tid)
        assert t is not None
        tasks.complete(tid, t.attempt, [output("a"), output("b")], {}, 1.5)
    usage = keys.usage(key.id)
    assert (usage.tasks, usage.completed, usage.images, usage.compute_seconds) == (2, 2, 4, 3.0)
    assert keys.revoke(key.prefix) is not None and keys.by_secret(secret) is None
