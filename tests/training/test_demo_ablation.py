"""On the generated demo cohort, fusion beats either modality alone (a small CPU run).

The cohort puts nodule and cardiomegaly in the image only, effusion and fracture in the report
only, and pneumonia in both (see docs/demo_cohort.md): a single modality caps near 0.77 macro AUROC,
fusion does not. The budget here is small (32x32 images, ResNet-18, 8 epochs, about 2 minutes of
CPU for the four runs), so the bar is only the ordering.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from medfusion.training.run import demo_manifest, train_from_config
from tests.support.demo import small_demo_config


@pytest.mark.slow
def test_fusion_beats_single_modalities_on_demo_cohort(tmp_path: Path) -> None:
    config = small_demo_config(tmp_path, data__demo={"n_studies": 240, "image_size": 128})  # the full demo cohort
    manifest = demo_manifest(config, progress=False)
    assert demo_manifest(config, progress=False) == manifest  # generated once, then reused
    auroc = {}
    for fusion in ("image_only", "text_only", "late", "hybrid"):
        result = train_from_config(
            config, overrides={"fusion": {"name": fusion}}, out_dir=tmp_path / fusion, progress=False
        )
        auroc[fusion] = result.test_metrics["macro_auroc"]
    single = max(auroc["image_only"], auroc["text_only"])
    assert auroc["late"] > single + 0.03, auroc
    assert auroc["hybrid"] > single + 0.03, auroc
