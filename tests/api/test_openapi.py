"""The OpenAPI document says what the server does, and docs/service.md lists exactly its endpoints."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from qedit.api.app import create_app
from qedit.api.openapi import api_routes
from qedit.config import Settings
from qedit.params import MAX_BOXES
from tests.support.images import b64, png_bytes
from tests.support.server import Server

DOC = Path(__file__).resolve().parents[2] / "docs" / "service.md"
ENDPOINT = re.compile(r"`(GET|POST|PUT|DELETE|PATCH) (/[^`?\s]*)")


@pytest.fixture(scope="module")
def document(server: Server) -> dict[str, Any]:
    return httpx.get(f"{server.url}/openapi.json").json()


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m.upper(), path, op) for path, ops in doc["paths"].items() for m, op in ops.items()]


def test_no_operation_promises_a_422(document: dict[str, Any]) -> None:
    assert not [(m, p) for m, p, op in _operations(document) if "422" in op["responses"]]
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_errors_are_documented_in_the_shape_each_interface_sends(document: dict[str, Any]) -> None:
    ops = {(m, p): op for m, p, op in _operations(document)}
    create = ops[("POST", "/v1/edits")]["responses"]
    assert {"400", "401", "404", "409", "410", "413", "429"} <= set(create)
    assert create["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/Error")
    wave = ops[("POST", "/api/v3/wavespeed-ai/qwen-image/edit")]["responses"]
    assert wave["401"]["content"]["application/json"]["schema"]["$ref"].endswith("/WaveSpeedError")
    assert "504" in ops[("POST", "/v1/images/edits")]["responses"]
    assert "503" in ops[("GET", "/readyz")]["responses"]
    assert {"403", "410"} <= set(ops[("GET", "/v1/files/{task_id}/{name}")]["responses"])


def test_keys_are_a_security_scheme_on_the_routes_that_need_one(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer KEY"}
    ops = {(m, p): op for m, p, op in _operations(document)}
    assert ops[("GET", "/v1/edits")]["security"] == [{"bearer": []}, {"apiKey": []}]
    for public in [("GET", "/healthz"), ("GET", "/v1/files/{task_id}/{name}"), ("GET", "/metrics")]:
        assert "security" not in ops[public], public


def test_events_are_an_event_stream(document: dict[str, Any]) -> None:
    ok = document["paths"]["/v1/edits/{task_id}/events"]["get"]["responses"]["200"]
    assert list(ok["content"]) == ["text/event-stream"]


def test_bounds_are_schema_constraints(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    text = str(schemas)
    assert f"'maxItems': {MAX_BOXES}" in text  # boxes
    assert "'maxItems': 3" in text  # images, loras
    assert "'maxLength': 8000" in text  # prompts
    assert "'pattern'" in text  # sizes such as W*H


def test_more_boxes_than_the_bound_are_refused(client: httpx.Client) -> None:
    box = {"x0": 0, "y0": 0, "x1": 10, "y1": 10}
    body = {"prompt": "x", "images": [b64(png_bytes())], "boxes": [box] * (MAX_BOXES + 1)}
    r = client.post("/v1/edits", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "boxes", r.text
    assert f"at most {MAX_BOXES}" in r.json()["error"]["message"]


def _normal(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path.rstrip("/"))


def test_docs_list_every_endpoint_and_only_real_ones(tmp_path: Path) -> None:
    app = create_app(Settings(model="instant", data_dir=tmp_path), start_services=False)
    served = {(m, _normal(r.path)) for r in api_routes(app.routes) if r.include_in_schema for m in r.methods - {"HEAD"}}
    documented = {(m, _normal(p)) for m, p in ENDPOINT.findall(DOC.read_text())}
    assert not served - documented, f"undocumented: {sorted(served - documented)}"
    assert not documented - served, f"documented but not served: {sorted(documented - served)}"
