"""The layering rules of ``qedit``, checked on every import statement (module level or inside a
function, so a lazy import cannot dodge them).

- ``engine/`` implements the model and knows nothing of the service, the API, the interfaces or the CLI.
- ``api/`` and ``interfaces/`` never import the engine or torch: the HTTP side runs without them.
- ``service/`` knows no dialect (no ``interfaces``/``api``) and only ``service/worker.py`` may load
  the engine (lazily, the first time it runs a task).
- The shared core (``models``, ``params``, ``request_check``, ``masks``, ...) is torch-free.
- No test module imports another test module: shared helpers live in ``tests/support``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "qedit"
TESTS = Path(__file__).resolve().parent
TORCH = ("torch", "torchvision", "diffusers", "transformers", "accelerate")
CORE = (
    "models", "params.py", "request_check.py", "masks.py", "errors.py", "config.py", "metadata.py", "files.py",
    "loras", "netfetch.py",
)  # fmt: skip


def imports(path: Path) -> set[str]:
    """Every module an import statement in ``path`` names (``from a import b`` gives ``a`` and ``a.b``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules(*parts: str) -> list[Path]:
    found: list[Path] = []
    for part in parts:
        target = SRC / part
        found.extend(sorted(target.rglob("*.py")) if target.is_dir() else [target])
    return found


def offending(paths: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in paths:
        for name in sorted(imports(path)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(SRC.parent)} imports {name}")
    return bad


@pytest.mark.parametrize(
    ("area", "forbidden"),
    [
        (("engine",), ("qedit.service", "qedit.api", "qedit.interfaces", "qedit.cli")),
        (("api", "interfaces"), ("qedit.engine", *TORCH)),
        (("service",), ("qedit.api", "qedit.interfaces", "qedit.cli")),
        (CORE, ("qedit.engine", "qedit.service", "qedit.api", "qedit.interfaces", "qedit.cli", *TORCH)),
    ],
    ids=["engine", "api+interfaces", "service", "core"],
)
def test_layers_import_only_downwards(area: tuple[str, ...], forbidden: tuple[str, ...]) -> None:
    assert offending(modules(*area), forbidden) == []


def test_only_the_worker_loads_the_engine_in_the_service() -> None:
    service = [p for p in modules("service") if p.name != "worker.py"]
    assert offending(service, ("qedit.engine", *TORCH)) == []


def test_the_rules_see_lazy_imports(tmp_path: Path) -> None:
    """The check itself must catch an import hidden inside a function."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from qedit.engine.pipeline import Engine\n    import torch\n")
    assert imports(sample) >= {"qedit.engine.pipeline", "qedit.engine.pipeline.Engine", "torch"}


def test_test_modules_share_helpers_only_through_support() -> None:
    bad = []
    for path in sorted(TESTS.rglob("*.py")):
        if "support" in path.relative_to(TESTS).parts:
            continue
        for name in imports(path):
            if name.startswith("tests.") and not name.startswith("tests.support"):
                bad.append(f"{path.relative_to(TESTS.parent)} imports {name}")
    assert bad == []
