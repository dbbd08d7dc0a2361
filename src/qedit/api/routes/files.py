"""Result files behind signed, expiring URLs (no API key needed: the signature is the permission).

In S3 mode result URLs are presigned URLs of the bucket; this route still serves our own signed
URLs from whichever storage is configured, so a link handed out stays a link.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from qedit.api.deps import ServicesDep
from qedit.api.errors import ApiError
from qedit.imageio import MIME_TYPES
from qedit.service.storage import LocalStorage

router = APIRouter(tags=["files"])


@router.get("/v1/files/{task_id}/{name}", summary="A result file (signed URL)", response_class=FileResponse)
async def get_file(
    task_id: str,
    name: str,
    services: ServicesDep,
    expires: Annotated[int, Query(description="Unix time the URL stops working")],
    sig: Annotated[str, Query(max_length=128)],
) -> Response:
    storage = services.storage
    problem = storage.check(task_id, name, expires, sig)
    if problem == "bad signature":
        raise ApiError("the URL's signature does not match", status=403, field="sig", code="bad_signature")
    if problem == "expired":
        raise ApiError(f"the URL expired at {expires}", status=410, field="expires", code="expired")
    media_type = MIME_TYPES.get(name.rsplit(".", 1)[-1], "application/octet-stream")
    headers = {"Cache-Control": "private, max-age=3600"}
    if isinstance(storage, LocalStorage):  # streamed from disk
        path = storage.served_file(task_id, name)
        if path is not None:
            return FileResponse(path, media_type=media_type, headers=headers)
        data = None
    else:
        data = await run_in_threadpool(storage.read_served, task_id, name)
    if data is None:
        raise ApiError("the file is no longer stored", status=410, field="name", code="gone")
    return Response(data, media_type=media_type, headers=headers)
