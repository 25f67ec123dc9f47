"""Fixtures of the explanation tests: the session's demo champion as a Predictor, and a late-fusion ViT
model (no cross-attention, no Grad-CAM) trained in seconds on the training tests' synthetic cohort."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from medfusion.inference import Predictor


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def demo_predictor(demo_project) -> Predictor:
    """The demo champion (hybrid, ResNet-18, tiny BERT, 32x32 inputs) on CPU."""
    return Predictor.from_dir(demo_project.model_dir, device="cpu")


@pytest.fixture(scope="session")
def demo_test_records(demo_project, demo_predictor) -> list[dict[str, Any]]:
    """The demo cohort's test split as records (``meta`` has ``study_uid`` and ``lesion_mask_path``)."""
    from medfusion.data.manifest import read_manifest, rows_to_records

    df = read_manifest(demo_project.manifest_path, demo_predictor.labels)
    return rows_to_records(df[df["split"] == "test"], demo_predictor.labels)


@pytest.fixture(scope="session")
def late_vit_predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    """A late-fusion model with a ViT image encoder (about 5 s on CPU)."""
    from medfusion.training.engine import train
    from tests.training.conftest import fast_config, make_records

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        records = make_records(tmp_path_factory.mktemp("late_cohort"))
        config = fast_config("late", epochs=2)
        result = train(config, records, tmp_path_factory.mktemp("late_run"), progress=False)
    finally:
        torch.set_num_threads(before)
    return Predictor.from_dir(result.model_dir, device="cpu")
