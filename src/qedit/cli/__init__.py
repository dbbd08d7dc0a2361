"""The ``qedit`` command: one sub-command per module, errors as one line and exit code 2.

Each sub-command module exposes ``register(subparsers)`` which adds its parser and sets
``func`` (``args -> int``). Imports of heavy modules (torch, the engine) happen inside ``func`` so
that ``qedit --help`` and argument errors answer instantly.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from qedit import __version__
from qedit.errors import QUOTE_LIMIT, QeditError, one_line, quote

COMMANDS = ("edit", "batch", "session", "lora", "models", "tiny_model", "serve", "worker", "keys", "bench", "memory")
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse with qedit's error style, and values that start with a dash and a digit taken as values.

    argparse takes any argument that starts with ``-`` for an option unless it is a plain negative
    number, so ``--box -5,0,10,10`` failed with "expected one argument" before the box could be
    checked (and refused, naming it). No qedit option starts with a digit, so ``-`` and a digit is
    always a value here: a negative number, a box, a size.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\d")  # argparse's hook for "looks like a number"

    def error(self, message: str) -> None:  # type: ignore[override]
        """One line, exit 2 (argparse's own behaviour prints the whole usage first); a long value
        argparse quotes back (``invalid int value: '...'``) is shortened by ``errors.quote``."""
        message = _LONG_QUOTED.sub(lambda m: quote(m.group(1)), message)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)}\n")


_LONG_QUOTED = re.compile(rf"'([^'\n]{{{QUOTE_LIMIT + 1},}})'")


def flags_given(args: argparse.Namespace, fields: Mapping[str, str] | Iterable[str]) -> dict[str, Any]:
    """``{field: value}`` for the flags the user gave (``fields``: argparse dest -> field, or names
    that are both). Unset flags are left out, so the model they fill keeps the only copy of the defaults."""
    pairs = fields.items() if isinstance(fields, Mapping) else ((name, name) for name in fields)
    return {field: getattr(args, dest) for dest, field in pairs if getattr(args, dest, None) is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="qedit", description="Edit images by instruction with Qwen-Image-Edit.")
    parser.add_argument("--version", action="version", version=f"qedit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"qedit.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"qedit.cli.{name}":
                continue  # sub-command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except QeditError as e:
        print(f"qedit {args.command}: error: {one_line(str(e))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as e:  # Ctrl-C; an edit it cancelled says what it left (see cli.progress)
        print(f"qedit {args.command}: {str(e) or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
