"""The history's counters count all of the key's edits (the server counts them), not the 20 it lists."""

from __future__ import annotations

from typing import Any

from tests.support.images import b64, png_bytes
from tests.support.playground import ready, shot
from tests.support.server import Server, wait_status

IMAGE = b64(png_bytes((400, 400)))


def test_counters_count_every_edit_of_the_key_not_only_the_last_20(page: Any, served: Server) -> None:
    key = served.create_key("many")
    other = served.create_key("other")
    with served.client(key) as c, served.client(other) as o:
        prompts = [f"edit {i}" for i in range(23)] + ["[fail] one"]
        for start in range(0, len(prompts), 8):  # a key may have 8 edits queued or running at once
            batch = [
                c.post("/v1/edits", json={"prompt": p, "images": [IMAGE], "num_inference_steps": 1}).json()["id"]
                for p in prompts[start : start + 8]
            ]
            for task_id in batch:
                assert wait_status(c, task_id)["status"] in ("completed", "failed")
        o.post("/v1/edits", json={"prompt": "not mine", "images": [IMAGE], "num_inference_steps": 1})
        long = c.post("/v1/edits", json={"prompt": "slow", "images": [IMAGE], "num_inference_steps": 100}).json()["id"]
        wait_status(c, long, ("processing",))
        listed = c.get("/v1/edits", params={"limit": 5, "status": "completed"}).json()
        assert len(listed["data"]) == 5 and listed["counts"] == {  # the key's, whatever the page and filter
            "queued": 0,
            "running": 1,
            "completed": 23,
            "failed": 1,
            "cancelled": 0,
        }

        page.add_init_script(f"localStorage.setItem('qedit.key', {key!r})")
        ready(page, served.url + "/")
        page.wait_for_selector("#counters:has-text('completed')")
        assert page.text_content("#counters") == "1 running · 23 completed · 1 failed"
        assert page.locator("#history-list li").count() == 20
        shot(page, "19-counters")

        c.delete(f"/v1/edits/{long}")
        wait_status(c, long, ("cancelled",))
        ready(page, served.url + "/")
        page.wait_for_selector("#counters:has-text('0 running')")
        assert page.text_content("#counters") == "0 running · 23 completed · 1 failed"
