"""The per-backend metrics as a scrape shows them (the router's view is plain data: no servers needed)."""

from __future__ import annotations

from prometheus_client import generate_latest

from qedit.service.metrics import Metrics


def test_backend_state_is_read_at_scrape_time_and_attempts_start_at_zero() -> None:
    view = [
        {"name": "a", "in_flight": 2, "state": "up", "price_per_image": 0.01, "max_concurrency": 4},
        {"name": "b", "in_flight": 0, "state": "half-open", "price_per_image": 0.0, "max_concurrency": 1},
    ]
    m = Metrics()
    m.watch_backends(["a", "b"], lambda: view)
    m.observe_attempt("a", "failed", 0.3)
    text = generate_latest(m.registry).decode()
    assert 'qedit_backend_in_flight{backend="a"} 2.0' in text
    assert 'qedit_backend_up{backend="a"} 1.0' in text
    assert 'qedit_backend_up{backend="b"} 0.5' in text
    assert 'qedit_backend_price_per_image{backend="a"} 0.01' in text
    assert 'qedit_backend_max_concurrency{backend="b"} 1.0' in text
    assert 'qedit_backend_attempts_total{backend="a",outcome="failed"} 1.0' in text
    assert 'qedit_backend_attempts_total{backend="b",outcome="completed"} 0.0' in text
    assert 'qedit_backend_attempt_seconds_bucket{backend="a",le="0.5",outcome="failed"} 1.0' in text

    view[1] = {**view[1], "state": "down", "in_flight": 1}  # the next scrape sees the change
    text = generate_latest(m.registry).decode()
    assert 'qedit_backend_up{backend="b"} 0.0' in text
    assert 'qedit_backend_in_flight{backend="b"} 1.0' in text
