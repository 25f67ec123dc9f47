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
from medfusion.datasets.demo.dicom_writer import DicomSpec, write_dicom
from medfusion.explain import explain_study
from medfusion.explain.faithfulness import evaluate, pooled
from medfusion.inference import Predictor, StudyInput
from tests.support.synthetic import LABELS, Record, fast_config, train_quietly

pytestmark = pytest.mark.slow
SIDE, SQUARE = 32, 6
#: The detector, the test split, and the square's test AUROC.
SquareDetector = tuple[Predictor, list[Record], float]


def _square_cohort(root: Path, seed: int = 0) -> dict[str, list[Record]]:
    """Records (label 0 = square present; labels 1-2 random); a positive's ``meta["lesion_mask_path"]``
    is an ``.npz`` holding its square's mask under label 0's name, as the demo cohort stores lesions."""
    rng = np.random.default_rng(seed)
    records: dict[str, list[Record]] = {}
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
            meta = {"study_uid": spec.study_uid, "lesion_mask_path": ""}
            if present:
                meta["lesion_mask_path"] = str(root / f"q{k:03d}.npz")
                np.savez(meta["lesion_mask_path"], **{LABELS[0]: mask})
            records[split].append(
                {"image": [str(path)], "report": "FINDINGS: Film reviewed.", "label": label, "meta": meta}
            )
            k += 1
    return records


@pytest.fixture(scope="module")
def square_detector(tmp_path_factory: pytest.TempPathFactory) -> SquareDetector:
    """An image-only ResNet-18 trained to detect the square (about 15 s on one CPU thread): the model,
    the test split, and the square's test AUROC."""
    records = _square_cohort(tmp_path_factory.mktemp("square_cohort"))
    config = fast_config("image_only", epochs=4)
    config = config.model_copy(update={"image_encoder": ImageEncoderConfig(name="resnet18", embed_dim=32)})
    result = train_quietly(config, records, tmp_path_factory.mktemp("square_run"))
    predictor = Predictor.from_dir(result.model_dir, device="cpu")
    return predictor, records["test"], float(result.test_metrics[f"auroc_{LABELS[0]}"])


def test_saliency_points_at_the_square_far_above_chance(square_detector: SquareDetector) -> None:
    """Pointing game (:func:`~medfusion.explain.faithfulness.evaluate`) against its exact random baseline."""
    predictor, test, auroc = square_detector
    assert auroc > 0.85  # the model detects the square, so its evidence is the square
    squares = [r for r in test if r["label"][0] == 1]
    row = pooled(evaluate(predictor, squares, {}, methods=("saliency",), ks=()), "saliency", "pointing_game")
    assert row.n == len(squares) >= 12
    assert row.hit_rate >= row.baseline + 0.4, row


def test_saliency_is_seeded_and_leaves_the_global_rng_alone(square_detector: SquareDetector) -> None:
    predictor, test, _ = square_detector
    positive = next(r for r in test if r["label"][0] == 1)
    study = StudyInput(image_paths=positive["image"], report_text=positive["report"])
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = explain_study(predictor, study, ("saliency",)).heatmaps["saliency"]
    assert torch.rand(1).item() == expected_next.item()
    second = explain_study(predictor, study, ("saliency",)).heatmaps["saliency"]
    np.testing.assert_array_equal(first, second)


def test_randomisation_check_separates_the_trained_detector_from_its_randomised_copies(
    square_detector: SquareDetector,
) -> None:
    """Maps of the same model recomputed agree exactly; Grad-CAM maps of copies whose head and top
    stages are re-initialised do not (Adebayo et al.'s cascading randomisation)."""
    from medfusion.explain.randomisation import (
        MAX_CORRELATION,
        cascade,
        randomisation_check,
        randomised,
        spearman,
    )

    predictor, test, _ = square_detector
    studies = [StudyInput(r["image"], r["report"]) for r in test if r["label"][0] == 1][:4]
    a = explain_study(predictor, studies[0], ("gradcam",)).heatmaps["gradcam"][0]
    assert spearman(a, explain_study(predictor, studies[0], ("gradcam",)).heatmaps["gradcam"][0]) == 1.0
    steps = cascade(predictor.loaded.model)
    assert [s for s, _ in steps] == ["head", "+fusion", "+layer4", "+layer3"]
    twin = randomised(predictor.loaded.model, steps[0][1])
    trained_params = dict(predictor.loaded.model.named_parameters())
    for name, p in twin.named_parameters():  # only the head changed
        assert torch.equal(p, trained_params[name]) != name.startswith("head."), name
    rows = randomisation_check(predictor, studies, methods=("gradcam",), labels=[LABELS[0]])
    assert [r.step for r in rows] == ["head", "+fusion", "+layer4", "+layer3"]
    assert all(r.n == len(studies) for r in rows)
    assert min(r.spearman for r in rows) < MAX_CORRELATION, rows  # the maps follow the weights
    assert rows[-1].spearman < 0.9 and rows[-1].ssim < 0.9, rows
