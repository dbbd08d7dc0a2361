"""The Playground: a web page for people who never touch the API, served from files in the package.

The page is a client of the public API like any other (``/v1/edits`` with the key the person
enters); the one thing it needs that the API did not say is the served model's limits and defaults,
which ``GET /v1/playground/config`` answers without a key (it reveals nothing but limits). The other
models a request may name, and their live workers, the page reads from ``GET /v1/models`` with the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from qedit.api.deps import ServicesDep
from qedit.api.submit import model_max_images
from qedit.imageio import ALLOWED_NAMES
from qedit.models.snapshot import spec_of
from qedit.models.specs import get_spec

PAGE = Path(__file__).resolve().parents[2] / "playground"
DEFAULT_SPEC = "qwen-image-edit-2509"  # defaults shown for engines that are not a spec (``instant``)

router = APIRouter(tags=["playground"])


class PlaygroundConfig(BaseModel):
    model: str
    auth: bool = Field(description="whether requests need an API key")
    max_images: int
    min_side: int
    max_side: int
    max_input_bytes: int
    formats: str = Field(description="input formats the server accepts")
    default_steps: int
    default_cfg: float
    fast: bool = Field(description="whether fast (Lightning) editing applies to the served model")
    loras: str = Field(description="where LoRAs may come from on this server (names of the sources, no paths)")
    no_worker: Literal["wait", "refuse"] = Field(
        description="what a request for a model no live worker serves gets: queued (wait) or a 503 (refuse)"
    )


@router.get("/", include_in_schema=False)
@router.get("/playground", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(PAGE / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


@router.get("/v1/playground/config", response_model=PlaygroundConfig, summary="The served model's limits and defaults")
async def config(services: ServicesDep) -> dict:
    s = services.settings
    served = spec_of(s.model)
    spec = served or get_spec(DEFAULT_SPEC)
    return {
        "model": s.model,
        "auth": s.auth != "none",
        "max_images": model_max_images(services),
        "min_side": s.min_side,
        "max_side": s.max_side,
        "max_input_bytes": s.max_input_bytes,
        "formats": ALLOWED_NAMES,
        "default_steps": spec.default_steps,
        "default_cfg": spec.default_cfg,
        # the Lightning recipe belongs to a known variant; ``instant`` stands in for one and runs it too
        "fast": served is not None or s.model == "instant",
        "loras": services.loras.options.store.policy.describe(),  # as refusals word it; no file is listed
        "no_worker": s.no_worker,  # the picker says whether a model without a worker waits or is refused
    }
