"""The real DICOM validators the SR tests run: Debian dicom3tools' ``dciodvfy`` and dcmtk's ``dsrdump``.

A test that needs one skips (with the reason) when it is not installed; under
``MEDFUSION_REQUIRE_SYSTEM_TESTS=1`` (CI) ``tests/conftest.py`` turns that skip into a failure.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (apt-get install {package})")
    return path


def dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines ``dciodvfy`` prints for ``path`` (the IOD check; warnings are not errors)."""
    tool = _tool("dciodvfy", "dicom3tools")
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60, check=False)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


def dsrdump(path: Path) -> str:
    """``dsrdump``'s rendering of the SR content tree (fails the test when it cannot parse the file)."""
    tool = _tool("dsrdump", "dcmtk")
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"dsrdump could not parse {path.name}: {proc.stderr[-2000:]}"
    assert "E:" not in proc.stderr and "F:" not in proc.stderr, proc.stderr[-2000:]
    return proc.stdout
