"""The wheel is complete and works from any folder.

Builds the wheel from a copy of the source (nothing written into the checkout; the version setuptools-scm
reads from this checkout's git is handed to the build, as a clean clone's build finds it), checks that it
holds the shipped configs and the review page, installs it into a fresh venv outside the repository (its
dependencies come from this venv's site-packages through a ``.pth`` line: no index needed), then runs
the installed ``medfusion`` from an empty folder: shipped configs are found by name, outputs land under
that folder's ``runs/``, nothing is written inside site-packages, and ``medfusion demo`` (tiny),
``medfusion score`` and ``medfusion review`` (up to its health endpoint) all work there. (That the
model's own requirements build a working environment from the package index is
``tests/tracking/test_model_environment.py``.)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["demo", "chest_xray"]


def _run(cmd: list[str | Path], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def git_version() -> str:
    """The version setuptools-scm derives from this checkout's git history."""
    version = _run([sys.executable, "-m", "setuptools_scm"], cwd=ROOT).strip().splitlines()[-1]
    assert version and not version.startswith("0.0.0"), version
    return version


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory, git_version: str) -> Path:
    """``pip wheel --no-deps --no-build-isolation`` of a copy of the source tree (setuptools from this venv)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "medfusion", src / "medfusion", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheels")
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", out, src]
    _run(cmd, cwd=src, env={**os.environ, "SETUPTOOLS_SCM_PRETEND_VERSION_FOR_MEDFUSION": git_version})
    (whl,) = out.glob("medfusion-*.whl")
    return whl


def test_a_build_without_git_falls_back_to_a_marked_version(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (src / "README.md").write_text("")
    (src / "medfusion").mkdir()
    (src / "medfusion" / "__init__.py").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SETUPTOOLS_SCM")} | {
        "GIT_CEILING_DIRECTORIES": str(tmp_path)
    }
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp_path / "out", src]
    _run(cmd, cwd=src, env=env)
    assert [p.name for p in (tmp_path / "out").glob("*.whl")] == ["medfusion-0.0.0+unknown-py3-none-any.whl"]


def test_the_wheel_holds_the_configs_and_the_review_page(wheel: Path, git_version: str) -> None:
    assert wheel.name == f"medfusion-{git_version}-py3-none-any.whl"  # the version comes from git
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


@pytest.mark.slow  # a fresh interpreter imports torch, MLflow and writes a DICOM cohort: tens of seconds
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
            "print(medfusion.__file__); print(APP_PATH); print(APP_PATH.is_file()); print(medfusion.__version__)",
        ],
        work,
        env,
    ).split()
    assert Path(where[0]).is_relative_to(purelib)  # the installed package, not the checkout
    assert where[3] == installed_version(venv, work, env)  # __version__ is the installed distribution's
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


def installed_version(venv: Path, cwd: Path, env: dict[str, str]) -> str:
    code = "from importlib.metadata import version; print(version('medfusion'))"
    return _run([venv / "bin" / "python", "-c", code], cwd, env).strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: ``medfusion demo`` shrunk to seconds; the gates are loosened so that a tiny model is promoted (what is
#: tested here is that the installed package runs the whole flow, not what the model learned).
TINY_DEMO = {
    "data.demo.n_studies": "64",
    "data.demo.image_size": "32",
    "data.demo.broken_files": "1",
    "data.image_size": "[32, 32]",
    "training.epochs": "3",
    "promotion.max_ece": "1",
    "promotion.max_latency_ms": "60000",
}


@pytest.mark.slow
def test_the_installed_wheel_runs_demo_score_and_review_from_an_empty_folder(
    installed: tuple[Path, Path, dict[str, str]], git_version: str, tmp_path: Path
) -> None:
    venv, purelib, env = installed
    work = tmp_path / "empty"
    work.mkdir()
    before = _files(purelib)
    medfusion = venv / "bin" / "medfusion"
    tiny = [arg for key, value in TINY_DEMO.items() for arg in ("--set", f"{key}={value}")]

    demo = _run([medfusion, "demo", *tiny], work, env, timeout=600)
    assert "PROMOTED" in demo
    project = work / "runs" / "demo"
    assert (project / "mlflow.db").is_file() and (project / "demo_cohort" / "manifest.parquet").is_file()

    out = work / "scores"
    cohort = project / "demo_cohort"
    scored = _run(
        [medfusion, "score", cohort / "dicom", "--reports", cohort / "reports", "--out", out, "--no-progress", *tiny],
        work,
        env,
        timeout=600,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scored"] >= 60, scored  # 64 studies, one broken file may cost a study
    import pandas as pd

    results = pd.concat(pd.read_parquet(p) for p in sorted((out / "results").glob("*.parquet")))
    assert set(results["medfusion_version"]) == {git_version}  # provenance names the real version

    port = _free_port()
    log = tmp_path / "review.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [str(medfusion), "review", "--port", str(port), *tiny],
            cwd=work,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline, body = time.monotonic() + 240, ""
        while body != "ok":
            assert proc.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, f"review: no health answer in 240 s\n{log.read_text()[-4000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=5) as response:
                    body = response.read().decode()
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=30)
    assert (project / "review" / "scores").is_dir()  # review scored the test split under the project
    assert _files(purelib) == before  # nothing written into site-packages
