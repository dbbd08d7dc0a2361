"""An app factory for ASGI servers: ``uvicorn --factory qedit.api.main:app_from_env``.

Reads ``QEDIT_*`` variables when the server calls it (never at import), so process managers and
tests can run the API without the ``qedit`` command line.
"""

from __future__ import annotations

from fastapi import FastAPI

from qedit.api.app import create_app
from qedit.config import Settings


def app_from_env() -> FastAPI:
    return create_app(Settings())
