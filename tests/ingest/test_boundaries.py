"""The readers and the data sets import only what their ``__init__`` docstrings allow.

Static check (the modules' ``import`` statements, read with :mod:`ast`), so it also covers imports made
inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import medfusion

ROOT = Path(medfusion.__file__).parent
#: Packages that import the readers and data sets, never the other way round.
DOWNSTREAM = ("training", "scoring", "review", "models", "inference", "explain", "tracking", "workflow", "cli")


def _medfusion_imports(path: Path) -> set[str]:
    """Every ``medfusion.*`` module named by an import statement of ``path``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n == "medfusion" or n.startswith("medfusion.")}


def _forbidden(package: str, extra: tuple[str, ...] = ()) -> dict[str, set[str]]:
    banned = tuple(f"medfusion.{p}" for p in (*DOWNSTREAM, *extra))
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = {n for n in _medfusion_imports(path) if n.startswith(banned)}
        if bad:
            found[str(path.relative_to(ROOT))] = bad
    return found


@pytest.mark.parametrize(("package", "extra"), [("ingest", ("datasets",)), ("datasets", ())])
def test_package_imports_nothing_downstream(package: str, extra: tuple[str, ...]) -> None:
    assert len(list((ROOT / package).rglob("*.py"))) >= 5
    assert _forbidden(package, extra) == {}


def test_the_old_data_package_is_gone() -> None:
    assert not (ROOT / "data").exists()
