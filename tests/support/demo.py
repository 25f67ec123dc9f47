"""The one small demo configuration of the tests, and the record of a trained demo project."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfusion.config import Config, load_config

#: The repository root.
ROOT = Path(__file__).resolve().parents[2]


def small_demo_config(project_dir: Path, **overrides: Any) -> Config:
    """``medfusion/configs/demo.yaml`` shrunk to CPU seconds: 160 studies, 32x32 inputs, ResNet-18, tiny BERT.

    Args:
        project_dir: Where the cohort, the MLflow store and runs go.
        **overrides: ``section__key=value`` overrides (``fusion__name="late"``,
            ``data__demo={"n_studies": 48}``) or ``key=value`` for top-level keys; a section's value
            replaces the default's whole entry.

    Returns:
        The validated configuration.
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
    return load_config(ROOT / "medfusion" / "configs" / "demo.yaml", base)


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
