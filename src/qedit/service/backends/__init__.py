"""Backends and fallback routing: one server in front of local workers, other qedit servers and hosted
WaveSpeed v3 APIs, each with a price, a priority and a concurrency cap (docs/service.md#backends).

``config`` reads the operator's TOML file, ``circuit`` is the health state of one backend, ``clients``
runs a task on a remote, ``router`` is the dispatcher that picks the cheapest healthy backend and fails
over. Without a backends file none of this is built: the embedded dispatcher runs everything, as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qedit.service.backends.router import Router
    from qedit.service.dispatch import EmbeddedDispatcher
    from qedit.service.wiring import Core


def build_router(core: Core, local: EmbeddedDispatcher) -> Router:
    """The router over the settings' backends file; the local backend is ``local`` (its workers)."""
    from qedit.service.backends.config import load_backends
    from qedit.service.backends.router import Router

    s = core.settings
    assert s.backends_file is not None
    configs = load_backends(s.backends_file, model=s.model, local_price=s.price_per_image)
    return Router(core, local, configs)
