"""Session fixtures shared across test packages: one small demo project with a promoted champion.

Training a model is the slow part of many tests (scoring, explanations, the review app), so it is
done once per session here and shared. Tests must not modify what these fixtures return; copy the
cohort folder first when a test needs to change files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from medfusion.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]

#: When set to 1 (CI does), a test that skips because a system package (Orthanc, Chromium) or a
#: real-data asset (OpenI, MiniLM, pydicom-data) is missing fails instead: CI must run everything.
#: Tests marked ``gpu`` may still skip on a machine without CUDA.
REQUIRE_ALL = "MEDFUSION_REQUIRE_SYSTEM_TESTS"


def pytest_configure(config: pytest.Config) -> None:
    """A fresh site (``MEDFUSION_HOME``) for the session, before collection: tests never read or create the
    user's pseudonym salt, and every test process and its children share the one created here."""
    from medfusion.salt import ALLOW_PUBLIC_SALT_ENV, HOME_ENV, SALT_ENV, SALT_FILE_ENV

    for name in (SALT_ENV, SALT_FILE_ENV, ALLOW_PUBLIC_SALT_ENV):
        os.environ.pop(name, None)
    os.environ[HOME_ENV] = tempfile.mkdtemp(prefix="medfusion-test-home-")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session's site folder."""
    home = os.environ.get("MEDFUSION_HOME", "")
    if Path(home).name.startswith("medfusion-test-home-"):
        shutil.rmtree(home, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """Turn skips into failures under ``MEDFUSION_REQUIRE_SYSTEM_TESTS=1`` (except ``gpu`` tests)."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get(REQUIRE_ALL) == "1" and item.get_closest_marker("gpu") is None:
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"skipped, but {REQUIRE_ALL}=1 requires it to run: {reason}"


def small_demo_config(project_dir: Path, **overrides: Any) -> Config:
    """``configs/demo.yaml`` shrunk to CPU seconds: 160 studies, 32x32 inputs, ResNet-18, tiny BERT.

    Args:
        project_dir: Where the cohort, the MLflow store and runs go.
        **overrides: ``section__key=value`` overrides, e.g. ``fusion__name="late"``.
    """
    base: dict[str, Any] = {
        "project_dir": str(project_dir),
        "data": {"image_size": [32, 32], "max_tokens": 128, "demo": {"n_studies": 160, "image_size": 64}},
        "image_encoder": {"name": "resnet18"},
        "text_encoder": {"pooling": "mean"},
        "training": {"epochs": 8, "early_stopping_patience": 8, "lr": 0.003},
        "promotion": {"max_ece": 0.35, "max_latency_ms": 5000, "max_label_auroc_drop": 0.2},
    }
    for key, value in overrides.items():
        section, _, leaf = key.partition("__")
        if leaf:
            base.setdefault(section, {})[leaf] = value
        else:
            base[key] = value
    return load_config(ROOT / "configs" / "demo.yaml", base)


@dataclass(frozen=True)
class DemoProject:
    """A trained, registered and promoted demo project (read-only for tests).

    Attributes:
        config: The configuration it was made with.
        cohort_dir: The generated demo cohort (``dicom/``, ``reports/``, ``masks/``, ``evidence.json``).
        manifest_path: The cohort's manifest.
        model_dir: The champion's model folder (``medfusion_model.json`` + weights).
        model_uri: ``models:/<name>@champion``.
        tracking_uri: The sqlite MLflow store's URI.
    """

    config: Config
    cohort_dir: Path
    manifest_path: Path
    model_dir: Path
    model_uri: str
    tracking_uri: str


@pytest.fixture(scope="session")
def demo_project(tmp_path_factory: pytest.TempPathFactory) -> DemoProject:
    """Demo cohort -> hybrid model -> MLflow run -> ``@champion`` (about a minute on 2 CPU cores)."""
    from medfusion.tracking.promotion import promote_challenger
    from medfusion.workflow import train_and_register

    config = small_demo_config(tmp_path_factory.mktemp("demo_project"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        outcome = train_and_register(config)
        decision = promote_challenger(config)
    finally:
        torch.set_num_threads(before)
    assert decision.promoted, decision.summary()
    cohort = config.project_dir / "demo_cohort"
    return DemoProject(
        config=config,
        cohort_dir=cohort,
        manifest_path=cohort / "manifest.parquet",
        model_dir=Path(outcome.result.model_dir),
        model_uri=f"models:/{config.tracking.registered_model}@champion",
        tracking_uri=outcome.tracking_uri,
    )
