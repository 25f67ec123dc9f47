"""The wheel is complete and works from any folder.

Builds the wheel from a copy of the source (nothing written into the checkout), checks that it holds the
shipped configs and the review page, installs it into a fresh venv outside the repository (its
dependencies come from this venv's site-packages through a ``.pth`` line: no index needed), then runs
the installed ``medfusion`` from an empty folder: shipped configs are found by name, outputs land under
that folder's ``runs/``, and nothing is written inside site-packages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["demo", "chest_xray"]


def _run(cmd: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel --no-deps --no-build-isolation`` of a copy of the source tree (setuptools from this venv)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "medfusion", src / "medfusion", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheels")
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", out, src]
    _run(cmd, cwd=src)
    (whl,) = out.glob("medfusion-*.whl")
    return whl


def test_the_wheel_holds_the_configs_and_the_review_page(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for config in SHIPPED:
        assert f"medfusion/configs/{config}.yaml" in names
    assert "medfusion/review/app/page.py" in names
    assert "medfusion/review/launch.py" in names
    assert not any(n.startswith(("tests/", "apps/", "configs/", "benchmarks/")) for n in names)


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, dict[str, str]]]:
    """A fresh venv with only the wheel installed; yields (venv, its site-packages, an environment for it)."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=venv.parent)
    python = venv / "bin" / "python"
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], venv).strip())
    # Dependencies from this venv, after the fresh venv's own site-packages: a plain path line, so that
    # this venv's editable medfusion (an __editable__ finder its .pth files would install) stays out.
    (purelib / "shared_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel], cwd=venv.parent)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"PYTHONDONTWRITEBYTECODE": "1", "MEDFUSION_HOME": str(venv.parent / "home"), "NO_COLOR": "1"}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    yield venv, purelib, env


def test_the_installed_wheel_runs_from_an_empty_folder(
    installed: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    venv, purelib, env = installed
    work = tmp_path / "empty"
    work.mkdir()
    before = _files(purelib)

    where = _run(
        [
            venv / "bin" / "python",
            "-c",
            "import medfusion; from medfusion.review.launch import APP_PATH; "
            "print(medfusion.__file__); print(APP_PATH); print(APP_PATH.is_file())",
        ],
        work,
        env,
    ).split()
    assert Path(where[0]).is_relative_to(purelib)  # the installed package, not the checkout
    assert Path(where[1]) == purelib / "medfusion" / "review" / "app" / "page.py" and where[2] == "True"

    medfusion = venv / "bin" / "medfusion"  # the console script of the wheel
    assert "--project-dir" in _run([medfusion, "demo", "--help"], work, env)
    default = _run([medfusion, "validate-config"], work, env)
    assert "name: demo" in default and f"project_dir: {work / 'runs' / 'demo'}" in default
    site = _run([medfusion, "validate-config", "chest_xray"], work, env)
    assert f"manifest: {work / 'data' / 'chest_xray' / 'manifest.parquet'}" in site

    tiny = ["--set", "data.demo.n_studies=8", "--set", "data.demo.image_size=32", "--set", "data.demo.broken_files=0"]
    made = _run([medfusion, "demo-data", "-c", "demo", *tiny], work, env)
    cohort = work / "runs" / "demo" / "demo_cohort"  # the shipped project_dir, under the working folder
    assert "demo cohort: 8 studies" in made and (cohort / "manifest.parquet").is_file()
    assert list(cohort.rglob("*.dcm"))
    assert _files(purelib) == before  # nothing written into site-packages
