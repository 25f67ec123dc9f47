"""A logged model carries what it needs: its own medfusion wheel and pinned requirements.

* The packed wheel is the running code, reproducible byte for byte, and pip installs it.
* The champion's ``requirements.txt`` builds a NEW venv (outside the repository, the machine's normal
  package index, no ``PYTHONPATH``) in which ``mlflow.pyfunc.load_model`` scores a study exactly as the
  training process does (within 1e-6).
* ``mlflow models serve`` of the champion answers ``POST /invocations`` on loopback with the same
  result, for a study given by file paths and one given as a FHIR DiagnosticReport.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from packaging.version import Version

from medfusion.ingest.manifest import read_manifest
from medfusion.tracking.store import use_store
from medfusion.tracking.wheel import pack_running_package, package_files, source_digest
from tests.conftest import DemoProject
from tests.support.fhir_resources import diagnostic_report

ROOT = Path(__file__).resolve().parents[2]
#: A cold pip cache downloads every dependency from the index (minutes); a warm one installs in about one.
INSTALL_TIMEOUT_S = 1200
SERVE_TIMEOUT_S = 120


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("MLFLOW_")
    }
    return env | {"PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true", **extra}


def test_the_packed_wheel_is_the_running_code_and_reproducible(tmp_path: Path) -> None:
    first = pack_running_package(tmp_path / "a")
    second = pack_running_package(tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()  # fixed timestamps, sorted entries
    version = metadata.version("medfusion")
    assert first.name == f"medfusion-{version}-py3-none-any.whl"
    with zipfile.ZipFile(first) as archive:
        names = archive.namelist()
        for name, path in package_files():
            assert archive.read(name) == path.read_bytes()
        info = f"medfusion-{version}.dist-info"
        assert {f"{info}/METADATA", f"{info}/WHEEL", f"{info}/RECORD", f"{info}/entry_points.txt"} <= set(names)
        assert "medfusion/configs/demo.yaml" in names and "medfusion/review/app/page.py" in names
        assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    # pip accepts it (RECORD hashes are checked on install) and installs the package and its console script.
    target = tmp_path / "target"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", target, first]
    subprocess.run([str(c) for c in cmd], check=True, capture_output=True, timeout=120)
    assert (target / "medfusion" / "tracking" / "wheel.py").read_bytes() == Path(
        ROOT / "medfusion" / "tracking" / "wheel.py"
    ).read_bytes()
    assert len(source_digest()) == 64


def test_a_source_tree_egg_info_does_not_hide_the_installed_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ``pip install -e .`` leaves medfusion.egg-info (PKG-INFO, no METADATA) in the checkout, and
    # importlib.metadata finds it first whenever the checkout is on sys.path (python -m pytest, a notebook).
    egg = tmp_path / "medfusion.egg-info"
    egg.mkdir()
    (egg / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: medfusion\nVersion: 9.9.9\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert metadata.distribution("medfusion").version == "9.9.9"  # the trap
    wheel = pack_running_package(tmp_path / "out")
    assert "9.9.9" not in wheel.name
    with zipfile.ZipFile(wheel) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        assert "Requires-Dist: torch" in archive.read(meta).decode()


@pytest.fixture(scope="module")
def champion_dir(demo_project: DemoProject, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The champion's model folder, downloaded from the registry (what a serving host receives)."""
    use_store(demo_project.tracking_uri)
    out = tmp_path_factory.mktemp("champion")
    return Path(mlflow.artifacts.download_artifacts(demo_project.model_uri, dst_path=str(out)))


def test_the_requirements_name_the_shipped_wheel_and_the_trained_versions(champion_dir: Path) -> None:
    lines = [line for line in (champion_dir / "requirements.txt").read_text().splitlines() if line.strip()]
    wheels = [line for line in lines if line.endswith(".whl")]
    assert wheels == [f"artifacts/medfusion-{metadata.version('medfusion')}-py3-none-any.whl"]
    assert (champion_dir / wheels[0]).is_file()
    assert not any(line.startswith("medfusion==") for line in lines)  # not an index package
    torch = Version(metadata.version("torch")).public
    assert f"torch=={torch}" in lines and f"mlflow=={metadata.version('mlflow')}" in lines


def _one_study(demo_project: DemoProject) -> pd.DataFrame:
    study = read_manifest(demo_project.manifest_path, demo_project.config.labels).iloc[0]
    return pd.DataFrame([{"image_paths": list(study["image_paths"]), "report_text": str(study["report_text"])}])


def _probs(frame: pd.DataFrame, labels: list[str]) -> np.ndarray:
    return frame[[f"prob_{label}" for label in labels]].to_numpy(dtype=np.float64)


@pytest.fixture(scope="module")
def fresh_venv(champion_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv outside the repository, made from the champion's own ``requirements.txt``.

    ``pip install -r requirements.txt`` runs in the model folder (its wheel path is relative to it), with
    this machine's pip configuration (its index and local wheels: torch's CPU build is on disk).
    """
    venv = tmp_path_factory.mktemp("model_env") / "venv"
    assert not venv.is_relative_to(ROOT)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    cmd = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-r", "requirements.txt"]
    proc = subprocess.run(
        cmd, cwd=champion_dir, env=_clean_env(), capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return venv


SCORE_IN_FRESH_VENV = """
import json, sys
import mlflow, pandas as pd
import medfusion
model = mlflow.pyfunc.load_model(sys.argv[1])
out = model.predict(pd.read_json(sys.argv[2], orient="records"))
print(json.dumps({"medfusion_file": medfusion.__file__, "rows": out.to_dict(orient="records")}))
"""


@pytest.mark.timeout(INSTALL_TIMEOUT_S + 600)  # the venv's install, plus training the demo project if first
def test_the_champion_loads_and_scores_in_a_fresh_venv(
    demo_project: DemoProject, fresh_venv: Path, tmp_path: Path
) -> None:
    labels = demo_project.config.labels
    study = _one_study(demo_project)
    use_store(demo_project.tracking_uri)
    expected = _probs(mlflow.pyfunc.load_model(demo_project.model_uri).predict(study), labels)  # (1, L)

    (tmp_path / "study.json").write_text(study.to_json(orient="records"))
    script = tmp_path / "score.py"
    script.write_text(SCORE_IN_FRESH_VENV)
    work = tmp_path / "empty"
    work.mkdir()
    cmd = [str(fresh_venv / "bin" / "python"), str(script), demo_project.model_uri, str(tmp_path / "study.json")]
    env = _clean_env(MLFLOW_TRACKING_URI=demo_project.tracking_uri)
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(result["medfusion_file"]).is_relative_to(fresh_venv)  # the shipped wheel, not the checkout
    got = _probs(pd.DataFrame(result["rows"]), labels)
    assert np.isfinite(expected).all() and got.shape == expected.shape == (1, len(labels))
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    assert result["rows"][0]["error"] == ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def served(demo_project: DemoProject, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow models serve`` of the champion on loopback (this venv: ``--env-manager local``); stopped after."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "models",
        "serve",
        "-m",
        demo_project.model_uri,
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    bin_dir = Path(sys.executable).parent  # mlflow runs ``uvicorn`` from PATH: this venv's
    env = _clean_env(MLFLOW_TRACKING_URI=demo_project.tracking_uri, PYTHONPATH=str(ROOT))
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    with log.open("w") as sink:
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVE_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"mlflow models serve exited:\n{log.read_text()[-4000:]}"
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, f"no /ping answer in {SERVE_TIMEOUT_S} s:\n{log.read_text()[-4000:]}"
            time.sleep(1)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)  # the server and its gunicorn/uvicorn workers: its own process group
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=30)


def test_mlflow_models_serve_answers_invocations_like_the_training_process(
    demo_project: DemoProject, served: str
) -> None:
    labels = demo_project.config.labels
    study = _one_study(demo_project)
    report = diagnostic_report("r1", str(study["report_text"].iloc[0]))
    by_fhir = pd.DataFrame(
        [{"image_paths": study["image_paths"].iloc[0], "report_text": "", "fhir_report": json.dumps(report)}]
    )
    use_store(demo_project.tracking_uri)
    model = mlflow.pyfunc.load_model(demo_project.model_uri)
    for frame in (study, by_fhir):
        expected = _probs(model.predict(frame), labels)  # (1, L)
        answer = _post(f"{served}/invocations", {"dataframe_records": frame.to_dict(orient="records")})
        got = _probs(pd.DataFrame(answer["predictions"]), labels)
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
        assert np.isfinite(got).all() and answer["predictions"][0]["error"] == ""
    # The FHIR report carries the same text as the plain one: the same study, the same scores.
    plain = _probs(model.predict(study), labels)
    np.testing.assert_allclose(_probs(model.predict(by_fhir), labels), plain, atol=1e-6, rtol=0)
