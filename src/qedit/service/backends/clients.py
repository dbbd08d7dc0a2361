"""Running one task on a remote backend: another qedit server (native API) or a WaveSpeed v3 API.

Each client sends the task's stored inputs (base64), polls the remote while relaying its progress
and our cancel request, and downloads the outputs into our storage. It never records the task's
end: it returns an ``Attempt`` and the router decides (complete, move on, or fail), so that the
store's conditional ``complete`` stays the one place a result is accepted.

What counts as the backend's failure (the task moves on): no connection, a timeout, a 5xx, a
401/403/404/429, a remote task that failed for a reason other than its input. What counts as the
request's own (the task fails, nowhere else is tried): a 400/413/422 at submission, or a remote task
that failed with ``invalid_input``.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import mimetypes
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import httpx

from qedit.service.backends.config import BackendConfig
from qedit.service.records import TaskOutput, TaskRecord

if TYPE_CHECKING:
    from qedit.service.storage import Storage
    from qedit.service.worker import _Lease

Outcome = Literal["completed", "failed", "rejected", "cancelled", "lost"]
REQUEST_FAULT = (400, 413, 422)
CANCEL_GRACE = 15.0  # seconds we keep polling a remote we asked to cancel, for its own answer


@dataclasses.dataclass
class Attempt:
    outcome: Outcome
    error: str | None = None
    status_code: int | None = None
    remote_id: str | None = None
    outputs: list[TaskOutput] = dataclasses.field(default_factory=list)
    compute_seconds: float = 0.0
    timings: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def backend_fault(self) -> bool:
        """Counts against the backend's circuit (not a refusal of the request, not a cancel)."""
        return self.outcome == "failed"


class RemoteError(Exception):
    def __init__(self, message: str, status_code: int | None = None, outcome: Outcome = "failed") -> None:
        super().__init__(message)
        self.status_code, self.outcome = status_code, outcome


def _data_uri(storage: Storage, key: str) -> str:
    """A stored input as the data URI both remote kinds take (read from the data dir or the bucket)."""
    mime = mimetypes.guess_type(key)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(storage.read(key)).decode()}"


def _error_text(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:300]
    if isinstance(body, dict):
        err = body.get("error") if isinstance(body.get("error"), dict) else body
        return str(err.get("message") or body.get("message") or body)[:300]
    return str(body)[:300]


class RemoteClient:
    """What both remote kinds share: the HTTP client, submission errors, downloads, the poll loop."""

    kind = "remote"

    def __init__(self, config: BackendConfig, storage: Storage) -> None:
        self.config, self.storage = config, storage
        key = config.secret
        headers = {"authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=config.url or "", headers=headers, timeout=config.request_timeout)

    def close(self) -> None:
        self.http.close()

    def check(self) -> str | None:
        """A health check: None when up, else why not."""
        path = self.config.health
        if path is None:
            return None
        try:
            r = self.http.get(path, timeout=min(5.0, self.config.request_timeout))
        except httpx.HTTPError as e:
            return f"{type(e).__name__}: {e}"[:300]
        return None if r.is_success else f"{path} answered {r.status_code}"

    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.TimeoutException as e:
            raise RemoteError(f"timed out: {type(e).__name__}") from None
        except httpx.HTTPError as e:
            raise RemoteError(f"{type(e).__name__}: {e}"[:300]) from None
        if r.status_code in REQUEST_FAULT:
            raise RemoteError(_error_text(r), r.status_code, "rejected")
        if not r.is_success:
            raise RemoteError(f"HTTP {r.status_code}: {_error_text(r)}", r.status_code)
        return r

    def _download(self, url: str) -> bytes:
        if url.startswith("data:"):
            return base64.b64decode(url.partition(",")[2])
        if url.startswith(f"{self.config.url}/"):
            return self._send("GET", url).content
        try:  # elsewhere (a CDN): without the operator's key
            r = httpx.get(url, timeout=self.config.request_timeout, follow_redirects=True)
        except httpx.HTTPError as e:
            raise RemoteError(f"output download: {type(e).__name__}: {e}"[:300]) from None
        if not r.is_success:
            raise RemoteError(f"output download: HTTP {r.status_code}", r.status_code)
        return r.content

    def _store(self, task: TaskRecord, n: int, data: bytes, seed: int, metadata: dict[str, str]) -> TaskOutput:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            fmt = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}.get(im.format or "", task.options.output_format)
        ext = {"png": "png", "jpeg": "jpg", "webp": "webp"}[fmt]
        name = f"{n}-a{task.attempt}-{self.config.name}"[:58] + f".{ext}"
        key = self.storage.write_output(task.id, name, data)
        meta = {**metadata, "task": task.id, "backend": self.config.name}
        return TaskOutput(
            name=name,
            file=key,
            seed=seed,
            width=width,
            height=height,
            format=fmt,  # type: ignore[arg-type]
            metadata=meta,
        )

    def run(self, task: TaskRecord, lease: _Lease, on_submitted: Callable[[str], None] | None = None) -> Attempt:
        """Submit, poll to the end, download; ``on_submitted(remote_id)`` once the remote took it."""
        t0 = time.monotonic()
        remote_id: str | None = None
        try:
            remote_id = self.submit(task)
            if on_submitted is not None:
                on_submitted(remote_id)
            return self._poll(task, lease, remote_id, t0)
        except RemoteError as e:
            return Attempt(e.outcome, str(e), e.status_code, remote_id)

    def _poll(self, task: TaskRecord, lease: _Lease, remote_id: str, t0: float) -> Attempt:
        deadline = t0 + self.config.timeout
        cancel_sent: float | None = None
        while True:
            if lease.token.cancelled and cancel_sent is None:
                self.cancel(remote_id)
                cancel_sent = time.monotonic()
                if lease.lost:
                    return Attempt("lost", "the lease was lost", remote_id=remote_id)
            state = self.status(remote_id)
            if state["status"] == "completed":
                outputs = self.outputs(task, state)
                return Attempt(
                    "completed",
                    remote_id=remote_id,
                    outputs=outputs,
                    compute_seconds=time.monotonic() - t0,
                    timings=state.get("timings") or {},
                )
            if state["status"] in ("failed", "cancelled"):
                if cancel_sent is not None:
                    return Attempt("cancelled", "cancelled", remote_id=remote_id)
                outcome: Outcome = "rejected" if state.get("reason") == "invalid_input" else "failed"
                return Attempt(outcome, f"remote task {state['status']}: {state.get('error')}", remote_id=remote_id)
            if state.get("total"):
                lease.beat(state["step"], state["total"])
            else:
                lease.beat()  # at most 5 a second: keeps the lease, and hears of a cancel request
            now = time.monotonic()
            if cancel_sent is not None and now - cancel_sent > CANCEL_GRACE:
                return Attempt("cancelled", "cancelled (the remote did not confirm)", remote_id=remote_id)
            if now > deadline:
                self.cancel(remote_id)
                return Attempt("failed", f"timed out after {self.config.timeout:g} s", remote_id=remote_id)
            time.sleep(self.config.poll_interval)

    # -- per kind --------------------------------------------------------------------------------

    def submit(self, task: TaskRecord) -> str:
        raise NotImplementedError

    def status(self, remote_id: str) -> dict[str, Any]:
        """``{status: created|processing|completed|failed|cancelled, step, total, error, reason, ...}``."""
        raise NotImplementedError

    def outputs(self, task: TaskRecord, state: dict[str, Any]) -> list[TaskOutput]:
        raise NotImplementedError

    def cancel(self, remote_id: str) -> None:
        """Best effort: a remote that cannot cancel just finishes, and its result is not recorded."""


class QeditClient(RemoteClient):
    """Another qedit server, through its native API: every engine parameter goes across unchanged."""

    kind = "qedit"

    def submit(self, task: TaskRecord) -> str:
        body: dict[str, Any] = task.params.model_dump(mode="json")
        body["images"] = [_data_uri(self.storage, i.path) for i in task.inputs]
        if task.mask:
            body["mask"] = _data_uri(self.storage, task.mask)
        body["output_format"] = task.options.output_format
        body["model"] = task.model  # its canonical id: the remote accepts a model it serves by that name too
        return str(self._send("POST", "/v1/edits", json=body).json()["id"])

    def status(self, remote_id: str) -> dict[str, Any]:
        v = self._send("GET", f"/v1/edits/{remote_id}").json()
        err = v.get("error") or {}
        return {
            "status": v["status"],
            "step": v["progress"]["step"],
            "total": v["progress"]["total"],
            "error": err.get("message"),
            "reason": err.get("reason"),
            "view": v,
            "timings": v.get("timings"),
        }

    def outputs(self, task: TaskRecord, state: dict[str, Any]) -> list[TaskOutput]:
        return [
            self._store(task, o["index"], self._download(o["url"]), int(o["seed"]), dict(o.get("metadata") or {}))
            for o in state["view"]["outputs"]
        ]

    def cancel(self, remote_id: str) -> None:
        with contextlib.suppress(httpx.HTTPError):
            self.http.delete(f"/v1/edits/{remote_id}")


class WaveSpeedClient(RemoteClient):
    """A hosted WaveSpeed v3 API (or anything speaking it, qedit's /api/v3 included).

    WaveSpeed's edit endpoints take prompt, images, size, seed and output format; the other engine
    parameters (steps, CFG, masks, boxes) do not go across, so a task that needs them should be
    routed to a qedit backend (list those models only there). It has no cancel: a cancelled task
    stops being polled and whatever the remote produces is not recorded.
    """

    kind = "wavespeed"

    def submit(self, task: TaskRecord) -> str:
        p = task.params
        body: dict[str, Any] = {
            "prompt": p.prompt,
            "images": [_data_uri(self.storage, i.path) for i in task.inputs],
            "seed": p.seed,
            "output_format": task.options.output_format,
        }
        if p.size is not None:
            body["size"] = f"{p.size[0]}*{p.size[1]}"
        if p.loras:
            body["loras"] = [lora.model_dump(mode="json") for lora in p.loras]
        data = self._send("POST", f"/api/v3/{self.config.model_path}", json=body).json()
        return str(data["data"]["id"])

    def status(self, remote_id: str) -> dict[str, Any]:
        d = self._send("GET", f"/api/v3/predictions/{remote_id}/result").json()["data"]
        return {"status": d["status"], "step": 0, "total": 0, "error": d.get("error"), "data": d}

    def outputs(self, task: TaskRecord, state: dict[str, Any]) -> list[TaskOutput]:
        seed = task.params.seed if task.params.seed >= 0 else 0  # WaveSpeed does not report the seed used
        return [self._store(task, n, self._download(u), seed, {}) for n, u in enumerate(state["data"]["outputs"])]


def client_for(config: BackendConfig, storage: Storage) -> RemoteClient:
    return {"qedit": QeditClient, "wavespeed": WaveSpeedClient}[config.kind](config, storage)
