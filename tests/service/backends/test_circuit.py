"""The circuit breaker with an injected clock: opens after N failures, backs off doubling to a cap, one probe."""

from __future__ import annotations

from qedit.service.backends.circuit import Circuit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_n_consecutive_failures_and_a_success_resets_the_count() -> None:
    c = Circuit(failures=3, base=1.0, cap=8.0, clock=Clock())
    c.failure("a")
    c.failure("b")
    c.success()
    c.failure("c")
    c.failure("d")
    assert c.state == "up" and c.allow()
    c.failure("e")
    assert c.state == "down" and not c.allow() and c.last_error == "e"


def test_backoff_doubles_up_to_the_cap_and_one_probe_goes_through() -> None:
    clock = Clock()
    c = Circuit(failures=1, base=1.0, cap=4.0, clock=clock)
    c.failure("refused")
    waits = []
    for _ in range(4):
        opened = clock.now
        assert not c.allow()
        clock.now = c.next_probe - 0.01
        assert not c.allow()
        clock.now = c.next_probe
        assert c.allow()  # the half-open probe
        assert c.state == "half-open" and not c.allow()  # only one
        waits.append(round(clock.now - opened, 6))
        c.failure("still refused")  # the probe failed: open again, longer
    assert waits == [1.0, 2.0, 4.0, 4.0]
    clock.now = c.next_probe
    assert c.allow()
    c.success()
    assert c.state == "up" and c.allow() and c.allow() and c.next_probe is None
    c.failure("x")
    assert c.next_probe == clock.now + 1.0  # closed again: the backoff starts over


def test_a_backend_with_a_health_check_is_probed_by_it_not_by_a_task() -> None:
    clock = Clock()
    c = Circuit(failures=3, base=2.0, cap=60.0, clock=clock)
    c.failure("health check refused", hard=True)  # a failed health check opens at once
    assert c.state == "down"
    clock.now += 2.0
    assert c.due() and not c.allow(probe_by_task=False)
    c.failure("again", hard=True)
    clock.now += 3.9
    assert not c.due()
    clock.now += 0.1
    assert c.due()
    c.success()
    assert c.state == "up" and not c.due()


def test_a_probe_that_ends_without_an_answer_lets_another_go() -> None:
    clock = Clock()
    c = Circuit(failures=1, base=5.0, clock=clock)
    c.failure("x")
    clock.now += 5.0
    assert c.allow() and not c.allow()
    c.abandon_probe()  # its task was cancelled
    assert c.state == "down" and c.allow()  # the next task is the probe, at once
