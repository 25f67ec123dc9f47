"""What a run trains on: the manifest it names, or the demo cohort only when asked for (no silent demo)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from medfusion.config import load_config
from medfusion.errors import ConfigError
from medfusion.training.run import load_records, training_manifest
from medfusion.workflow import run_demo, train_and_register

ROOT = Path(__file__).resolve().parents[2]
NO_MANIFEST = """\
labels: [nodule, cardiomegaly, effusion, fracture, pneumonia]
project_dir: {project}
data:
  demo: {{n_studies: 8, image_size: 32, broken_files: 0}}
"""
REFUSAL = (
    "data.manifest is not set: point it at your manifest (made by 'medfusion build-manifest'), or set data.source: demo"
)


def _config_file(tmp_path: Path) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(NO_MANIFEST.format(project=tmp_path / "project"))
    return path


def test_an_unset_manifest_is_refused_not_replaced_by_synthetic_data(tmp_path: Path) -> None:
    config = load_config(_config_file(tmp_path))
    assert config.data.source == "manifest" and config.data.manifest is None
    for entry_point in (load_records, training_manifest, train_and_register):
        with pytest.raises(ConfigError, match=re.escape(REFUSAL)):
            entry_point(config)
    assert not (tmp_path / "project").exists()  # no demo cohort, no tracking store


def test_the_demo_is_explicit(tmp_path: Path) -> None:
    config = load_config(_config_file(tmp_path), {"data": {"source": "demo"}})
    assert training_manifest(config, progress=False) == tmp_path / "project" / "demo_cohort" / "manifest.parquet"
    with pytest.raises(ConfigError, match="the demo trains on the synthetic demo cohort, but the configuration sets"):
        # a site config is never turned into the demo
        run_demo(load_config(ROOT / "medfusion" / "configs" / "chest_xray.yaml"))


@pytest.mark.slow  # a CLI process: torch and MLflow imports take 20 s of CPU
def test_cli_train_without_a_manifest_is_one_line_and_exit_1(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "medfusion.cli", "train", "--config", str(_config_file(tmp_path))],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout[-2000:]
    assert done.stderr.strip().splitlines() == [f"error: {REFUSAL} to train on the synthetic demo cohort"]
    assert not (tmp_path / "project").exists()


def test_a_demo_cohort_is_reused_only_with_the_same_knobs(tmp_path: Path) -> None:
    from medfusion.training.run import demo_manifest
    from tests.support.demo import small_demo_config

    small = {"n_studies": 16, "image_size": 32, "broken_files": 0}
    plain = small_demo_config(tmp_path, data__demo=small)
    manifest = demo_manifest(plain, progress=False)
    stamp = manifest.stat().st_mtime_ns
    assert demo_manifest(plain, progress=False) == manifest and manifest.stat().st_mtime_ns == stamp  # reused
    noisy = small_demo_config(tmp_path, data__demo={**small, "image_signal": 0.0})
    demo_manifest(noisy, progress=False)
    assert manifest.stat().st_mtime_ns != stamp  # another cohort: generated again
    stamp = manifest.stat().st_mtime_ns
    demo_manifest(noisy, progress=False)
    assert manifest.stat().st_mtime_ns == stamp
