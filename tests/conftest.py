"""Session fixtures shared across test packages: a small demo project with a promoted champion, and the
synthetic cohort with a tiny model trained on it (helpers: :mod:`tests.support`).

Training a model is the slow part of many tests (scoring, explanations, the review app), so it is
done once per session here and shared. Tests must not modify what these fixtures return; copy the
cohort folder first when a test needs to change files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from medfusion.training.engine import TrainResult
from tests.support.demo import DemoProject, small_demo_config
from tests.support.synthetic import Record, Recorder, fast_config, make_records, train_quietly
from tests.support.threads import single_thread

#: When set to 1 (CI does), a test that skips because a system package (Orthanc, Chromium) or a
#: real-data asset (OpenI, MiniLM, pydicom-data) is missing fails instead: CI must run everything.
#: Tests marked ``gpu`` may still skip on a machine without CUDA.
REQUIRE_ALL = "MEDFUSION_REQUIRE_SYSTEM_TESTS"

#: Session fixtures that train models or run whole pipelines. A test that uses one (directly or through
#: another fixture) is marked ``slow`` whatever its own duration: the fast loop, ``pytest -m "not slow"``,
#: must not pay for them.
SLOW_FIXTURES = frozenset({"demo_project", "trained"})


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``slow`` every test that needs one of :data:`SLOW_FIXTURES`."""
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


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


@pytest.fixture(autouse=True)
def mlflow_environment() -> Iterator[None]:
    """The MLFLOW_* variables after a test are those before it: a test (or a library call such as
    ``mlflow.set_tracking_uri``) that writes them must not point later tests at its store."""
    before = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    yield
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        if key not in before:
            del os.environ[key]
    os.environ.update(before)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models: one torch intra-op thread is faster than two fighting over a busy 2-core machine."""
    with single_thread():
        yield


@pytest.fixture(scope="session")
def demo_project(tmp_path_factory: pytest.TempPathFactory) -> DemoProject:
    """Demo cohort -> hybrid model -> MLflow run -> ``@champion`` (about a minute on 2 CPU cores; its
    tests are ``slow``)."""
    from medfusion.tracking.promotion import promote_challenger
    from medfusion.workflow import train_and_register

    config = small_demo_config(tmp_path_factory.mktemp("demo_project"))
    with single_thread():
        outcome = train_and_register(config)
        decision = promote_challenger(config)
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


@pytest.fixture(scope="session")
def synthetic_records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Record]]:
    """The synthetic cohort (:mod:`tests.support.synthetic`), written once per session (read-only)."""
    return make_records(tmp_path_factory.mktemp("synthetic_cohort"))


@pytest.fixture(scope="session")
def trained(
    synthetic_records: dict[str, list[Record]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[TrainResult, Recorder]:
    """A hybrid model trained for 8 epochs on the synthetic cohort (5-40 s on a quiet to a busy CPU; its
    tests are ``slow``), with the callback's record."""
    recorder = Recorder()
    result = train_quietly(
        fast_config("hybrid"), synthetic_records, tmp_path_factory.mktemp("run"), callbacks=[recorder]
    )
    return result, recorder


@pytest.fixture(scope="session")
def tiny_model_dir(synthetic_records: dict[str, list[Record]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hybrid model (ViT 32x32 + tiny BERT) trained for one epoch on the synthetic cohort: a model folder
    exactly as training writes it, in seconds, for tests of the plumbing (not of what the model learned)."""
    result = train_quietly(fast_config("hybrid", epochs=1), synthetic_records, tmp_path_factory.mktemp("tiny_run"))
    return Path(result.model_dir)
