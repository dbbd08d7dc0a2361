"""``qedit.config.Settings`` from the flags of ``qedit serve``, ``qedit worker`` and ``qedit keys``.

A flag whose argparse dest is a settings field (``--data-dir`` -> ``data_dir``) overrides the
``QEDIT_*`` variable when given; what the command itself fixes (``dispatch="celery"`` for a worker)
comes as keyword arguments. A value pydantic refuses is one line naming the flag or the variable.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from qedit.cli import flags_given
from qedit.errors import InvalidInput

if TYPE_CHECKING:
    from qedit.config import Settings


def settings_from_args(args: argparse.Namespace, **fixed: Any) -> Settings:
    from pydantic import ValidationError

    from qedit.config import Settings

    given = flags_given(args, tuple(Settings.model_fields))
    try:
        return Settings(**{**given, **fixed})
    except ValidationError as e:
        err = e.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else ""
        message = err["msg"].removeprefix("Value error, ")
        if not name:
            raise InvalidInput(message) from None
        where = f"--{name.replace('_', '-')}" if name in given else f"QEDIT_{name.upper()}"
        raise InvalidInput(f"{message} (got {err['input']!r})", field=where) from None
