"""S3 storage against a real S3 server on loopback (moto's standalone server), not a mock of boto3.

The storage itself (bytes in and out, presigned URLs, our URLs recognised as inputs, retention),
the start-up checks, and a real ``qedit serve`` storing everything in a bucket: nothing in its
data dir but the database and the secret.
"""

from __future__ import annotations

import base64
import io
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from PIL import Image

from qedit.service.dispatch import Sweeper
from qedit.service.instant import InstantEngine
from qedit.service.s3storage import MAX_PRESIGN_SECONDS, S3Storage, StorageError
from qedit.service.signing import sign_path
from qedit.service.wiring import Core
from qedit.service.worker import Worker, worker_name
from tests.support.images import b64, png_bytes
from tests.support.s3 import CREDENTIALS, MotoS3, moto_s3
from tests.support.server import Server, wait_status
from tests.support.tasks import current, queue_edit
from tests.support.workers import WorkerProcess

TASK = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def s3() -> Iterator[MotoS3]:
    yield from moto_s3()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def s3_core(s3: MotoS3, aws_env: None, make_core: Callable[..., Core]) -> Callable[..., Core]:
    """``s3_core(**settings)``: a ``Core`` storing into a fresh bucket under prefix ``q/``."""

    def make(**overrides: Any) -> Core:
        bucket = s3.new_bucket()
        return make_core(storage_url=f"s3://{bucket}/q", s3_endpoint_url=s3.endpoint, **overrides)

    return make


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def signed_at(url: str) -> int:
    import calendar

    return calendar.timegm(time.strptime(query(url)["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))


def run(core: Core, task_id: str) -> None:
    w = Worker(core, engine_factory=lambda s: InstantEngine(), name=worker_name("test"), on_webhook=lambda t: None)
    assert w.run_next(task_id) is not None


# -- the storage -----------------------------------------------------------------------------------


def test_bytes_go_to_the_bucket_under_the_prefix_and_keys_stay_relative(s3: MotoS3, s3_core: Callable) -> None:
    core = s3_core()
    storage = core.storage
    assert isinstance(storage, S3Storage)
    key = storage.write_input(TASK, "0.png", b"in")
    out = storage.write_output(TASK, "0-a1.png", b"out")
    assert (key, out) == (f"inputs/01/{TASK}/0.png", f"outputs/01/{TASK}/0-a1.png")
    assert s3.keys(storage.bucket) == [f"q/{key}", f"q/{out}"]
    assert storage.read(key) == b"in" and storage.read(out) == b"out"
    assert storage.read_served(TASK, "0-a1.png") == b"out"
    assert storage.read_served(TASK, "0.png") is None  # inputs are never served
    storage.delete(out)
    with pytest.raises(FileNotFoundError):
        storage.read(out)
    with pytest.raises(ValueError):
        storage.read("../other-prefix/x.png")
    assert not (core.settings.data_dir / "inputs").exists()


def test_a_result_url_is_presigned_and_expires_when_the_files_are_deleted(s3: MotoS3, s3_core: Callable) -> None:
    core = s3_core(url_ttl_seconds=3600)
    storage = core.storage
    data = png_bytes()
    storage.write_output(TASK, "0-a1.png", data)
    finished = time.time() - 100
    url = storage.url("http://api.test", TASK, "0-a1.png", finished)
    assert url.startswith(f"{s3.endpoint}/{storage.bucket}/q/outputs/01/{TASK}/0-a1.png?")
    r = httpx.get(url)
    assert r.status_code == 200 and r.content == data and r.headers["content-type"] == "image/png"
    # moto does not refuse expired URLs: the URL's own fields say when S3 will
    q = query(url)
    assert q["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert signed_at(url) + int(q["X-Amz-Expires"]) == pytest.approx(storage.expires_at(finished), abs=1)
    assert storage.expires_at(finished) == int(finished + 3600)


def test_presigned_urls_are_clamped_to_seven_days(s3_core: Callable) -> None:
    storage = s3_core(url_ttl_seconds=30 * 24 * 3600).storage
    url = storage.url("http://api.test", TASK, "0-a1.png", time.time())
    assert int(query(url)["X-Amz-Expires"]) == MAX_PRESIGN_SECONDS


def test_public_endpoint_names_the_host_clients_reach(s3: MotoS3, s3_core: Callable) -> None:
    storage = s3_core(s3_public_endpoint_url="https://files.example.com").storage
    storage.write_output(TASK, "0-a1.png", b"x")  # through the internal endpoint
    url = storage.url("http://api.test", TASK, "0-a1.png", time.time())
    assert url.startswith(f"https://files.example.com/{storage.bucket}/q/outputs/")
    assert storage.own_file(url) == (TASK, b"x")  # still ours: read through the internal endpoint


def test_our_urls_given_back_are_read_from_the_bucket_others_are_not(s3: MotoS3, s3_core: Callable) -> None:
    storage = s3_core().storage
    storage.write_output(TASK, "0-a1.png", b"result")
    url = storage.url("http://api.test", TASK, "0-a1.png", time.time())
    assert storage.own_file(url) == (TASK, b"result")
    sig = query(url)["X-Amz-Signature"]
    assert storage.own_file(url.replace(sig, "f" * len(sig))) is None  # not signed by us
    assert storage.own_file(url.replace("0-a1.png", "1-a1.png")) is None  # signature is for another key
    assert storage.presigned_own(url, now=signed_at(url) + int(query(url)["X-Amz-Expires"]) + 1) is None  # expired
    other = s3.new_bucket()
    assert storage.own_file(url.replace(f"/{storage.bucket}/", f"/{other}/")) is None
    local = storage.signed_file_url("http://api.test", TASK, "0-a1.png", int(time.time()) + 60)
    assert storage.own_file(local) == (TASK, b"result")  # our /v1/files URLs too


def test_uploads_are_objects_with_a_presigned_download_url(s3: MotoS3, s3_core: Callable) -> None:
    storage = s3_core().storage
    upload = uuid.uuid4().hex
    put, download, expires = storage.upload_urls("http://api.test", upload, "cat.png")
    assert put.startswith(f"http://api.test/api/v3/media/uploads/{upload}/cat.png?")  # the PUT comes to us
    q = query(put)
    assert storage.check_put(upload, "cat.png", int(q["expires"]), q["sig"]) is None
    storage.write_upload(upload, "cat.png", b"pixels")
    assert download.startswith(f"{s3.endpoint}/{storage.bucket}/q/uploads/")
    assert httpx.get(download).content == b"pixels"
    assert storage.own_file(download) == (upload, b"pixels")
    assert signed_at(download) + int(query(download)["X-Amz-Expires"]) == pytest.approx(expires, abs=1)


def test_retention_deletes_the_objects_of_expired_tasks_and_old_uploads(s3: MotoS3, s3_core: Callable) -> None:
    core = s3_core(url_ttl_seconds=60)
    bucket = core.storage.bucket  # type: ignore[attr-defined]
    old, recent = queue_edit(core), queue_edit(core)
    run(core, old)
    run(core, recent)
    from sqlalchemy import update

    from qedit.service.tables import TaskRow

    with core.db.transaction() as s:  # finished 61 s ago: past its lifetime
        s.execute(update(TaskRow).where(TaskRow.id == old).values(finished_at=time.time() - 61))
    upload = uuid.uuid4().hex
    core.storage.write_upload(upload, "a.png", b"x")
    assert len(s3.keys(bucket, f"q/inputs/{old[:2]}/{old}/")) == 1
    assert len(s3.keys(bucket, f"q/outputs/{old[:2]}/{old}/")) == 1

    Sweeper(core, deliver=lambda t: None).delete_expired()

    assert s3.keys(bucket, f"q/inputs/{old[:2]}/{old}/") == [] and s3.keys(bucket, f"q/outputs/{old[:2]}/{old}/") == []
    assert current(core, old).files_expired
    assert len(s3.keys(bucket, f"q/outputs/{recent[:2]}/{recent}/")) == 1  # within its lifetime: kept
    assert s3.keys(bucket, "q/uploads/") == [f"q/uploads/{upload[:2]}/{upload}/a.png"]  # uploaded just now
    assert core.storage.delete_old_uploads(time.time() + 1) == 1
    assert s3.keys(bucket, "q/uploads/") == []


def test_a_lost_attempt_deletes_its_objects(s3: MotoS3, s3_core: Callable) -> None:
    core = s3_core()
    tid = queue_edit(core)
    run(core, tid)
    outputs = current(core, tid).outputs
    w = Worker(core, engine_factory=lambda s: InstantEngine(), name=worker_name("test"))
    w._discard(outputs)
    assert s3.keys(core.storage.bucket, "q/outputs/") == []  # type: ignore[attr-defined]


# -- start-up checks -----------------------------------------------------------------------------------


def test_a_missing_bucket_is_one_line_at_start_or_created_in_development(
    s3: MotoS3, aws_env: None, make_core: Callable[..., Core]
) -> None:
    name = s3.new_bucket(create=False)
    with pytest.raises(StorageError) as e:
        make_core(storage_url=f"s3://{name}", s3_endpoint_url=s3.endpoint)
    assert str(e.value) == (
        f"QEDIT_STORAGE_URL: bucket {name!r} at {s3.endpoint} does not exist "
        "(create it, or set QEDIT_S3_CREATE_BUCKET=1 in development)"
    )
    core = make_core(storage_url=f"s3://{name}", s3_endpoint_url=s3.endpoint, s3_create_bucket=True)
    core.storage.write_input(TASK, "0.png", b"x")
    assert s3.keys(name) == [f"inputs/01/{TASK}/0.png"]  # no prefix: keys at the bucket's root


def test_an_unreachable_endpoint_or_no_credentials_is_one_line_at_start(
    s3: MotoS3, aws_env: None, make_core: Callable[..., Core], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.server import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(StorageError, match=r"^QEDIT_STORAGE_URL: cannot reach bucket 'qedit-x' at http://127"):
        make_core(storage_url="s3://qedit-x", s3_endpoint_url=dead)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageError, match=r"no S3 credentials .* set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        make_core(storage_url="s3://qedit-x", s3_endpoint_url=s3.endpoint)


# -- a real server --------------------------------------------------------------------------------------


def _image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_serve_keeps_inputs_and_outputs_in_the_bucket(tmp_path: Path, s3: MotoS3) -> None:
    bucket = s3.new_bucket()
    env = {**s3.env(bucket, "svc"), "QEDIT_AUTH": "none", "QEDIT_SECRET": "s"}  # loopback http URLs: not fetched
    server = Server(tmp_path / "data", env).start()
    try:
        with server.client() as c:
            r = c.post("/v1/edits", json={"prompt": "invert", "images": [b64(png_bytes())], "seed": 3})
            assert r.status_code == 202, r.text
            first = wait_status(c, r.json()["id"])
            assert first["status"] == "completed", first
            url = first["outputs"][0]["url"]
            assert url.startswith(f"{s3.endpoint}/{bucket}/svc/outputs/"), url
            image = _image(httpx.get(url).content)
            assert image.size == (480, 400) and image.getpixel((0, 0)) == (235, 95, 195)  # inverted (20, 160, 60)
            name, expires = "0-a1.png", int(time.time()) + 60  # the first attempt's first output
            path = f"{first['id']}/{name}"
            served = c.get(f"/v1/files/{path}", params={"expires": expires, "sig": sign_path(b"s", path, expires)})
            assert served.status_code == 200 and served.content == httpx.get(url).content  # /v1/files reads the bucket

            # a chained edit: task:// reads the parent's output object, base64 answers inline
            body = {"prompt": "again", "images": [f"task://{first['id']}/0"], "base64": True}
            second = wait_status(c, c.post("/v1/edits", json=body).json()["id"])
            assert second["status"] == "completed", second
            assert second["parent_id"] == first["id"]
            inline = base64.b64decode(second["outputs"][0]["b64_json"])
            assert inline == httpx.get(second["outputs"][0]["url"]).content
            assert _image(inline).getpixel((0, 0)) == (20, 160, 60)  # inverted twice

            # our own presigned URL as an input: read from the bucket (fetching it is refused: private)
            third = wait_status(c, c.post("/v1/edits", json={"prompt": "x", "images": [url]}).json()["id"])
            assert third["status"] == "completed" and third["parent_id"] == first["id"], third

            # WaveSpeed's upload: the PUT comes to the API, the object lands in the bucket
            created = c.post("/api/v3/media/uploads", json={"filename": "cat.png", "size": 5000}).json()["data"]
            assert httpx.put(created["upload"]["url"], content=png_bytes()).status_code == 200
            assert created["download_url"].startswith(f"{s3.endpoint}/{bucket}/svc/uploads/")
            assert httpx.get(created["download_url"]).content == png_bytes()
            fourth = c.post("/v1/edits", json={"prompt": "x", "images": [created["download_url"]]})
            assert wait_status(c, fourth.json()["id"])["status"] == "completed", fourth.text
        keys = s3.keys(bucket)
        for task in (first, second, third):
            tid = task["id"]
            assert f"svc/inputs/{tid[:2]}/{tid}/0.png" in keys
            assert f"svc/outputs/{tid[:2]}/{tid}/0-a1.png" in keys
        assert not any((server.data_dir / kind).exists() for kind in ("inputs", "outputs", "uploads"))
    finally:
        server.stop()


def test_serve_retention_deletes_the_objects(tmp_path: Path, s3: MotoS3) -> None:
    bucket = s3.new_bucket()
    env = {**s3.env(bucket), "QEDIT_AUTH": "none", "QEDIT_URL_TTL_SECONDS": "1", "QEDIT_SWEEP_INTERVAL": "0.3"}
    server = Server(tmp_path / "data", env).start()
    try:
        with server.client() as c:
            task = wait_status(c, c.post("/v1/edits", json={"prompt": "x", "images": [b64(png_bytes())]}).json()["id"])
            assert task["status"] == "completed"
            deadline = time.monotonic() + 10
            while s3.keys(bucket) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert s3.keys(bucket) == []
            assert wait_status(c, task["id"])["outputs"] == []  # the task stays, without its files
    finally:
        server.stop()


def test_serve_refuses_to_start_on_a_missing_bucket(tmp_path: Path, s3: MotoS3) -> None:
    import subprocess
    import sys

    name = s3.new_bucket(create=False)
    env = Server(tmp_path, s3.env(name)).env()
    qedit = Path(sys.executable).with_name("qedit")
    r = subprocess.run([str(qedit), "serve", "--port", "0"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        f"qedit serve: error: QEDIT_STORAGE_URL: bucket {name!r} at {s3.endpoint} does not exist "
        "(create it, or set QEDIT_S3_CREATE_BUCKET=1 in development)"
    )


def test_api_and_celery_worker_share_only_the_bucket_database_and_broker(
    tmp_path: Path, s3: MotoS3, redis_url: str
) -> None:
    """Two processes with data dirs of their own, as on two hosts: the worker reads the inputs the
    API stored and writes outputs the API serves, all through the bucket."""

    from tests.support.databases import postgres_schema_url

    pg = postgres_schema_url()
    pg_url = next(pg)
    bucket = s3.new_bucket()
    env = {
        **s3.env(bucket),
        "QEDIT_DISPATCH": "celery",
        "QEDIT_BROKER_URL": redis_url,
        "QEDIT_CELERY_QUEUE": f"qedit-{uuid.uuid4().hex[:8]}",
        "QEDIT_DATABASE_URL": pg_url,
        "QEDIT_AUTH": "none",
        "QEDIT_SECRET": "shared-secret",
    }
    api = Server(tmp_path / "api", env).start()
    worker_env = Server(tmp_path / "worker", env).env()  # its own data dir
    worker = WorkerProcess(worker_env, tmp_path / "worker.log")
    try:
        with api.client() as c:
            task = c.post("/v1/edits", json={"prompt": "x", "images": [b64(png_bytes())], "seed": 1}).json()
            done = wait_status(c, task["id"], timeout=60)
            assert done["status"] == "completed", (done, worker.tail())
            assert _image(httpx.get(done["outputs"][0]["url"]).content).getpixel((0, 0)) == (235, 95, 195)
        assert [k.split("/")[0] for k in s3.keys(bucket)] == ["inputs", "outputs"]
        for side in ("api", "worker"):
            assert not any((tmp_path / side / kind).exists() for kind in ("inputs", "outputs"))
    finally:
        worker.stop()
        api.stop()
        next(pg, None)


def test_a_bucket_outage_is_a_503_naming_the_storage_and_nothing_is_queued(tmp_path: Path) -> None:
    own = MotoS3()  # a server of this test's own, to stop
    bucket = own.new_bucket()
    server = Server(tmp_path / "data", {**own.env(bucket), "QEDIT_AUTH": "none"}).start()
    try:
        own.stop()
        with server.client(timeout=60) as c:
            r = c.post("/v1/edits", json={"prompt": "x", "images": [b64(png_bytes())]})
            assert r.status_code == 503, r.text
            error = r.json()["error"]
            assert error["param"] == "QEDIT_STORAGE_URL" and f"bucket {bucket!r}" in error["message"], error
            assert c.get("/v1/edits").json()["data"] == []  # nothing half-written: no task without its inputs
    finally:
        server.stop()


def test_a_run_that_meets_a_bucket_outage_runs_again_instead_of_failing(aws_env: None, make_core: Callable) -> None:
    own = MotoS3()
    core = make_core(storage_url=f"s3://{own.new_bucket()}/q", s3_endpoint_url=own.endpoint, lease_seconds=30)
    tid = queue_edit(core)
    own.stop()
    w = Worker(core, engine_factory=lambda s: InstantEngine(), name=worker_name("test"), on_webhook=lambda t: None)
    w.run_next(tid)
    task = current(core, tid)
    assert task.status == "processing" and task.error is None, task  # not failed as the request's fault
    assert task.attempt == 1 and task.lease_until is not None  # its lease runs out, then it is claimed again
