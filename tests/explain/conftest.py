"""Fixtures of the explanation tests: the session's demo champion as a Predictor, and a late-fusion ViT
model (no cross-attention, no Grad-CAM) trained in seconds on the synthetic cohort."""

from __future__ import annotations

from typing import Any

import pytest

from medfusion.inference import Predictor
from tests.support.demo import DemoProject
from tests.support.synthetic import Record, fast_config, train_quietly


@pytest.fixture(scope="session")
def demo_predictor(demo_project: DemoProject) -> Predictor:
    """The demo champion (hybrid, ResNet-18, tiny BERT, 32x32 inputs) on CPU."""
    return Predictor.from_dir(demo_project.model_dir, device="cpu")


@pytest.fixture(scope="session")
def demo_test_records(demo_project: DemoProject, demo_predictor: Predictor) -> list[dict[str, Any]]:
    """The demo cohort's test split as records (``meta`` has ``study_uid`` and ``lesion_mask_path``)."""
    from medfusion.ingest.manifest import read_manifest, rows_to_records

    df = read_manifest(demo_project.manifest_path, demo_predictor.labels)
    return rows_to_records(df[df["split"] == "test"], demo_predictor.labels)


@pytest.fixture(scope="session")
def late_vit_predictor(
    synthetic_records: dict[str, list[Record]], tmp_path_factory: pytest.TempPathFactory
) -> Predictor:
    """A late-fusion model with a ViT image encoder trained on the synthetic cohort (about 5 s on CPU)."""
    result = train_quietly(fast_config("late", epochs=2), synthetic_records, tmp_path_factory.mktemp("late_run"))
    return Predictor.from_dir(result.model_dir, device="cpu")
