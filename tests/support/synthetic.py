"""A small synthetic cohort of real DICOM files whose evidence is known by construction, and the
CPU-seconds configuration that trains on it.

* ``spot``: a bright square somewhere in the image (never in the report);
* ``word``: the report says "Effusion is seen." or "The lungs are clear." (never in the image);
* ``both``: ``spot`` AND a febrile INDICATION.

A few studies have no report, a few no image, one points at a broken DICOM file, and a few labels are
unknown (NaN), so every missing-data path of training runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medfusion.config import Config
from medfusion.datasets.demo.dicom_writer import DicomSpec, write_dicom
from medfusion.training.engine import TrainResult, train
from tests.support.threads import single_thread

LABELS = ["spot", "word", "both"]
SPLITS = {"train": 96, "val": 32, "test": 32}

#: A record: ``image`` (DICOM paths), ``report``, ``label`` ((L,) float32, NaN = unknown), ``meta``.
Record = dict[str, Any]


def _image(rng: np.random.Generator, spot: bool) -> np.ndarray:
    pixels = rng.normal(1000, 120, size=(32, 32))
    if spot:
        r, c = rng.integers(2, 20, size=2)
        pixels[r : r + 10, c : c + 10] += 1500
    return np.clip(pixels, 0, 4095).astype(np.uint16)


def _report(rng: np.random.Generator, word: bool, fever: bool) -> str:
    filler = rng.choice(["Heart size normal.", "No pneumothorax.", "Mild degenerative change.", "Lines unchanged."], 2)
    indication = "Fever and cough." if fever else "Routine follow-up."
    finding = "Effusion is seen." if word else "The lungs are clear."
    return f"INDICATION: {indication}\nFINDINGS: {filler[0]} {finding} {filler[1]}"


def make_records(
    root: Path,
    seed: int = 0,
    *,
    image_signal: bool = True,
    text_signal: bool = True,
    sizes: dict[str, int] | None = None,
    prevalence: float = 0.5,
) -> dict[str, list[Record]]:
    """Write the cohort's DICOM files (32x32) under ``root`` and return its records per split.

    Args:
        root: An empty folder.
        seed: The generator's seed.
        image_signal: False: no image shows its spot (the image is pure noise for every label).
        text_signal: False: no report states its finding or fever (the text is pure noise).
        sizes: Studies per split (default :data:`SPLITS`).
        prevalence: Chance of ``spot``, ``word`` and fever each (0.5: the default cohort, as before).

    Returns:
        ``{"train": 96 records, "val": 32, "test": 32}``.
    """
    rng = np.random.default_rng(seed)
    records: dict[str, list[Record]] = {}
    k = 0
    broken = root / "broken.dcm"
    broken.write_text("not a DICOM file")
    for split, n in (sizes or SPLITS).items():
        records[split] = []
        for i in range(n):
            if prevalence == 0.5:  # the default cohort's draws, unchanged
                spot, word, fever = (bool(x) for x in rng.integers(0, 2, size=3))
            else:
                spot, word, fever = (bool(x) for x in rng.random(3) < prevalence)
            label = np.array([spot, word, spot and fever], dtype=np.float32)
            spec = DicomSpec(study_uid=f"1.2.3.{k}", series_uid=f"1.2.3.{k}.1")
            path = write_dicom(root / f"s{k:03d}.dcm", _image(rng, spot and image_signal), spec)
            image = [str(path)]
            report = _report(rng, word and text_signal, fever and text_signal)
            if split == "train" and i % 12 == 5:
                report = ""  # no report
            if split == "train" and i % 12 == 7:
                image = []  # no image
            if split == "train" and i == 9:
                image = [str(broken)]
                label[0] = label[2] = np.nan  # unknown once the image is gone
            if i % 10 == 3:
                label[1] = np.nan  # unknown label
            records[split].append(
                {"image": image, "report": report, "label": label, "meta": {"study_uid": spec.study_uid}}
            )
            k += 1
    return records


def fast_config(fusion: str = "hybrid", *, labels: Sequence[str] = LABELS, **training: Any) -> Config:
    """A CPU-seconds configuration: 32x32 images, a tiny ViT and the tiny BERT.

    Args:
        fusion: The fusion's registered name.
        labels: The label names (default: this cohort's).
        **training: ``training`` settings over the defaults (8 epochs, batch 16, lr 3e-3, seed 0).
    """
    return Config(
        name="synthetic",
        labels=list(labels),
        data={"image_size": [32, 32], "max_tokens": 32},
        image_encoder={
            "name": "vit",
            "patch_size": 8,
            "vit_hidden": 32,
            "vit_layers": 1,
            "vit_heads": 2,
            "embed_dim": 32,
        },
        text_encoder={"tiny": {"vocab_size": 200}, "embed_dim": 32, "pooling": "mean"},
        fusion={"name": fusion, "hidden_dim": 32, "num_heads": 2, "dropout": 0.0},
        training={"epochs": 8, "batch_size": 16, "lr": 3e-3, "early_stopping_patience": 8, "seed": 0, **training},
    )


def train_quietly(config: Config, records: dict[str, list[Record]], run_dir: Path, **kwargs: Any) -> TrainResult:
    """Train on one torch thread without a progress bar (``kwargs`` go to :func:`~medfusion.training.engine.train`)."""
    with single_thread():
        return train(config, records, run_dir, progress=False, **kwargs)


class Recorder:
    """A training callback that keeps what it receives."""

    def __init__(self) -> None:
        self.epochs: list[tuple[int, dict[str, float]]] = []
        self.result: TrainResult | None = None

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """Keep the epoch's metrics."""
        self.epochs.append((epoch, metrics))

    def on_train_end(self, result: TrainResult) -> None:
        """Keep the result."""
        self.result = result
