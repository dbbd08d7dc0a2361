"""Result files behind signed, expiring URLs (no API key needed: the signature is the permission)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from qedit.api.deps import ServicesDep
from qedit.api.errors import ApiError
from qedit.imageio import MIME_TYPES

router = APIRouter(tags=["files"])


@router.get("/v1/files/{task_id}/{name}", summary="A result file (signed URL)", response_class=FileResponse)
async def get_file(
    task_id: str,
    name: str,
    services: ServicesDep,
    expires: Annotated[int, Query(description="Unix time the URL stops working")],
    sig: Annotated[str, Query(max_length=128)],
) -> FileResponse:
    problem = services.storage.check(task_id, name, expires, sig)
    if problem == "bad signature":
        raise ApiError("the URL's signature does not match", status=403, field="sig", code="bad_signature")
    if problem == "expired":
        raise ApiError(f"the URL expired at {expires}", status=410, field="expires", code="expired")
    path = services.storage.served_file(task_id, name)
    if path is None:
        raise ApiError("the file is no longer stored", status=410, field="name", code="gone")
    ext = name.rsplit(".", 1)[-1]
    return FileResponse(
        path,
        media_type=MIME_TYPES.get(ext, "application/octet-stream"),
        headers={"Cache-Control": "private, max-age=3600"},
    )
