"""``qedit.config.Settings`` from the flags of ``qedit serve``, ``qedit worker`` and ``qedit keys``.

A flag whose argparse dest is a settings field (``--data-dir`` -> ``data_dir``) overrides the
``QEDIT_*`` variable when given; the engine flags shared with ``qedit edit`` (``engine_flags``) map
the same way, ``--cache`` onto ``step_cache`` (``QEDIT_CACHE`` names the model cache's folder). What
the command itself fixes (``dispatch="celery"`` for a worker) comes as keyword arguments. A value
pydantic or ``EngineOptions`` refuses is one line naming the flag or the variable the user set.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from qedit.cli import flags_given
from qedit.errors import InvalidInput, quote

if TYPE_CHECKING:
    from qedit.config import Settings

FLAGS = {
    "gguf_file": "--gguf",
    "step_cache": "--cache",
    "lora_dirs": "--lora-dir",
    "lora_hub_orgs": "--lora-hub-org",
    "lora_url_hosts": "--lora-url-host",
    "lightning_dirs": "--lightning-dir",
    "celery_queue": "--queue",
    "backends_file": "--backends",
}
"""Settings field -> its flag, where the flag is not the field's name with dashes."""


def settings_from_args(args: argparse.Namespace, **fixed: Any) -> Settings:
    from pydantic import ValidationError

    from qedit.config import SETTING_OF_OPTION, Settings

    dests = {name: name for name in Settings.model_fields} | {opt: field for opt, field in SETTING_OF_OPTION.items()}
    given = flags_given(args, dests)
    try:
        return Settings(**{**given, **fixed})
    except ValidationError as e:
        err = e.errors()[0]
        name, value = str(err["loc"][0]) if err["loc"] else "", err.get("input")
        cause = (err.get("ctx") or {}).get("error")
        if getattr(cause, "field", None):  # a check across settings (Settings._engine) names its setting
            name, value = cause.field, cause.value
        message = err["msg"].removeprefix("Value error, ")
        if not name:
            raise InvalidInput(message) from None
        got = f" (got {quote(value)})" if value is not None else ""
        raise InvalidInput(message + got, field=_where(name, given)) from None


def _where(name: str, given: dict[str, Any]) -> str:
    """The flag if the user gave it, else the variable (a field read through an alias is named as such)."""
    if name in given:
        return FLAGS.get(name, f"--{name.replace('_', '-')}")
    return name if name.startswith("QEDIT_") else f"QEDIT_{name.upper()}"
