"""The flags of how an engine runs (``EngineOptions``), defined once for every command that loads one.

``qedit edit``, ``batch``, ``session edit``, ``bench``, ``serve`` and ``worker`` add this group, so
``--offload``/``--quantize``/``--cache``/``--compile``/``--cfg-batch`` mean the same everywhere.
Unset flags are not passed on: ``EngineOptions`` keeps the only copy of the defaults and the checks,
and its errors are re-named after the flag the user typed.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from qedit.cli import flags_given
from qedit.errors import InvalidInput
from qedit.models.options import CACHE_MODES, CFG_BATCH_MODES, OFFLOAD_MODES, QUANTIZE_MODES, EngineOptions

FLAGS: dict[str, str] = {
    "offload": "--offload",
    "quantize": "--quantize",
    "gguf_file": "--gguf",
    "cache": "--cache",
    "cache_threshold": "--cache-threshold",
    "cache_warmup": "--cache-warmup",
    "compile": "--compile",
    "cfg_batch": "--cfg-batch",
    "text_cache": "--text-cache",
}
"""``EngineOptions`` field -> flag (the argparse dest is the field's name)."""


def add_engine_arguments(parser: argparse.ArgumentParser | Any) -> None:
    """The speed-and-memory group (docs/speed.md says what each costs in fidelity)."""
    g = parser.add_argument_group("speed and memory (docs/speed.md)")
    g.add_argument(
        "--offload",
        choices=OFFLOAD_MODES,
        help="keep weights off the GPU until needed: model (a component at a time), group (blocks, "
        "overlapped with compute), sequential (layer by layer, least memory); CUDA only (default none)",
    )
    g.add_argument(
        "--quantize",
        choices=QUANTIZE_MODES,
        help="the transformer's and text encoder's weights: int8 (torchao weight-only; CPU too), fp8 "
        "(torchao, CUDA), nf4 (bitsandbytes, CUDA); gguf: the transformer from --gguf FILE (default none)",
    )
    g.add_argument("--gguf", dest="gguf_file", type=Path, metavar="FILE", help="transformer weights as a GGUF file")
    g.add_argument(
        "--cache",
        choices=CACHE_MODES,
        help="reuse transformer work between steps through cache-dit: dbcache, or taylorseer (dbcache plus "
        "a Taylor-series forecast); fewer passes, output changes (default none)",
    )
    g.add_argument("--cache-threshold", type=float, metavar="X", help="cache's residual threshold (default 0.08)")
    g.add_argument("--cache-warmup", type=int, metavar="N", help="steps always computed first (default 8)")
    g.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="torch.compile the repeated transformer blocks (first edit pays the compile)",
    )
    g.add_argument(
        "--cfg-batch",
        choices=CFG_BATCH_MODES,
        help="both CFG branches in one transformer call: auto (where faster: CUDA), on, off (default auto)",
    )


def engine_options_from_args(args: argparse.Namespace, **extra: Any) -> EngineOptions:
    """The flags as one checked ``EngineOptions``; errors name the flag."""
    given = flags_given(args, tuple(FLAGS))
    try:
        return EngineOptions(**{**given, **extra})
    except InvalidInput as e:
        raise InvalidInput(e.message, field=FLAGS.get(e.field or "", e.field)) from None
