"""Image heatmaps on a detector whose evidence is known to the pixel: a bright square in 32x32 images.

The DICOM files carry a fixed window, so the only way to detect the square is to look at it (a
min-max display would darken the background of every positive image and give a global shortcut).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medfusion.config import ImageEncoderConfig
from medfusion.data.dicom_writer import DicomSpec, write_dicom
from medfusion.explain import explain_study
from medfusion.explain.faithfulness import dilate, pointing_hit, tolerance_px
from medfusion.inference import Predictor, StudyInput
from medfusion.training.engine import train
from tests.training.conftest import fast_config

pytestmark = pytest.mark.slow
SIDE, SQUARE = 32, 6


def _square_cohort(root: Path, seed: int = 0) -> tuple[dict[str, list[dict]], dict[str, np.ndarray]]:
    """Records (label 0 = square present; labels 1-2 random) and each file's square mask."""
    rng = np.random.default_rng(seed)
    records: dict[str, list[dict]] = {}
    masks: dict[str, np.ndarray] = {}
    k = 0
    for split, n in {"train": 96, "val": 32, "test": 32}.items():
        records[split] = []
        for _ in range(n):
            present = bool(rng.integers(0, 2))
            pixels = rng.normal(1000, 120, size=(SIDE, SIDE))
            mask = np.zeros((SIDE, SIDE), dtype=bool)
            if present:
                r, c = rng.integers(2, SIDE - SQUARE - 2, size=2)
                pixels[r : r + SQUARE, c : c + SQUARE] += 1500
                mask[r : r + SQUARE, c : c + SQUARE] = True
            spec = DicomSpec(study_uid=f"1.2.9.{k}", series_uid=f"1.2.9.{k}.1", window_center=1500, window_width=3000)
            path = write_dicom(root / f"q{k:03d}.dcm", np.clip(pixels, 0, 4095).astype(np.uint16), spec)
            label = np.array([present, rng.integers(0, 2), rng.integers(0, 2)], dtype=np.float32)
            records[split].append({"image": [str(path)], "report": "FINDINGS: Film reviewed.", "label": label,
                                   "meta": {"study_uid": spec.study_uid}})
            masks[str(path)] = mask
            k += 1
    return records, masks


@pytest.fixture(scope="module")
def square_detector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Predictor, list[dict], dict[str, np.ndarray], float]:
    """An image-only ResNet-18 trained to detect the square (about 15 s on one CPU thread)."""
    records, masks = _square_cohort(tmp_path_factory.mktemp("square_cohort"))
    config = fast_config("image_only", epochs=4)
    config = config.model_copy(update={"image_encoder": ImageEncoderConfig(name="resnet18", embed_dim=32)})
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(config, records, tmp_path_factory.mktemp("square_run"), progress=False)
    finally:
        torch.set_num_threads(before)
    predictor = Predictor.from_dir(result.model_dir, device="cpu")
    positives = [r for r in records["test"] if r["label"][0] == 1]
    return predictor, positives, masks, float(result.test_metrics[f"auroc_{config.labels[0]}"])


def _pointing(predictor: Predictor, positives: list[dict], masks: dict[str, np.ndarray], method: str) -> tuple[float, float]:
    """(hit rate, exact random baseline) of ``method``'s label-0 heatmap over the positive studies."""
    hits, baseline = [], []
    for record in positives:
        region = dilate(masks[record["image"][0]], tolerance_px((SIDE, SIDE)))
        ex = explain_study(predictor, StudyInput(image_paths=record["image"], report_text=record["report"]), (method,))
        hits.append(pointing_hit(ex.heatmaps[method][0], region))
        baseline.append(region.mean())
    return float(np.mean(hits)), float(np.mean(baseline))


def test_saliency_points_at_the_square_far_above_chance(square_detector) -> None:
    predictor, positives, masks, auroc = square_detector
    assert auroc > 0.85 and len(positives) >= 12  # the model detects the square
    hit, baseline = _pointing(predictor, positives, masks, "saliency")
    gradcam_hit, _ = _pointing(predictor, positives, masks, "gradcam")  # reported, not asserted
    print(f"pointing game, {len(positives)} studies: saliency {hit:.3f}, Grad-CAM {gradcam_hit:.3f}, random {baseline:.3f}")
    assert hit >= baseline + 0.4, (hit, baseline)


def test_saliency_is_seeded_and_leaves_the_global_rng_alone(square_detector) -> None:
    predictor, positives, _, _ = square_detector
    study = StudyInput(image_paths=positives[0]["image"], report_text=positives[0]["report"])
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = explain_study(predictor, study, ("saliency",)).heatmaps["saliency"]
    assert torch.rand(1).item() == expected_next.item()
    second = explain_study(predictor, study, ("saliency",)).heatmaps["saliency"]
    np.testing.assert_array_equal(first, second)
