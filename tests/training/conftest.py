"""A small synthetic cohort of real DICOM files, with one image-only, one text-only and one joint label.

* ``spot``: a bright square somewhere in the image (never in the report);
* ``word``: the report says "Effusion is seen." or "The lungs are clear." (never in the image);
* ``both``: ``spot`` AND a febrile INDICATION.

A few studies have no report, a few no image, one points at a broken DICOM file, and a few labels are
unknown (NaN), so every missing-data path of training runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from medfusion.config import Config
from medfusion.data.dicom_writer import DicomSpec, write_dicom
from medfusion.training.engine import TrainResult, train

LABELS = ["spot", "word", "both"]
SPLITS = {"train": 96, "val": 32, "test": 32}


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


def make_records(root: Path, seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    records: dict[str, list[dict[str, Any]]] = {}
    k = 0
    broken = root / "broken.dcm"
    broken.write_text("not a DICOM file")
    for split, n in SPLITS.items():
        records[split] = []
        for i in range(n):
            spot, word, fever = (bool(x) for x in rng.integers(0, 2, size=3))
            label = np.array([spot, word, spot and fever], dtype=np.float32)
            path = write_dicom(root / f"s{k:03d}.dcm", _image(rng, spot), DicomSpec(study_uid=f"1.2.3.{k}", series_uid=f"1.2.3.{k}.1"))
            image = [str(path)]
            report = _report(rng, word, fever)
            if split == "train" and i % 12 == 5:
                report = ""  # no report
            if split == "train" and i % 12 == 7:
                image = []  # no image
            if split == "train" and i == 9:
                image = [str(broken)]
                label[0] = label[2] = np.nan  # unknown once the image is gone
            if i % 10 == 3:
                label[1] = np.nan  # unknown label
            records[split].append({"image": image, "report": report, "label": label, "meta": {"study_uid": f"1.2.3.{k}"}})
            k += 1
    return records


@pytest.fixture(scope="session")
def synthetic_records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    return make_records(tmp_path_factory.mktemp("synthetic_cohort"))


def fast_config(fusion: str = "hybrid", **training: Any) -> Config:
    """A CPU-seconds configuration: 32x32 images, a tiny ViT and the tiny BERT."""
    return Config(
        name="synthetic",
        labels=LABELS,
        data={"image_size": [32, 32], "max_tokens": 32},
        image_encoder={"name": "vit", "patch_size": 8, "vit_hidden": 32, "vit_layers": 1, "vit_heads": 2, "embed_dim": 32},
        text_encoder={"tiny": {"vocab_size": 200}, "embed_dim": 32, "pooling": "mean"},
        fusion={"name": fusion, "hidden_dim": 32, "num_heads": 2, "dropout": 0.0},
        training={"epochs": 8, "batch_size": 16, "lr": 3e-3, "early_stopping_patience": 8, "seed": 0, **training},
    )


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one intra-op thread is faster than two fighting over a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Recorder:
    """A training callback that keeps what it receives."""

    def __init__(self) -> None:
        self.epochs: list[tuple[int, dict[str, float]]] = []
        self.result: TrainResult | None = None

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs.append((epoch, metrics))

    def on_train_end(self, result: TrainResult) -> None:
        self.result = result


@pytest.fixture(scope="session")
def trained(synthetic_records: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, Recorder]:
    """A hybrid model trained on the synthetic cohort (about 5 s on CPU), with the callback's record."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    recorder = Recorder()
    try:
        result = train(fast_config("hybrid"), synthetic_records, tmp_path_factory.mktemp("run"), callbacks=[recorder], progress=False)
    finally:
        torch.set_num_threads(before)
    return result, recorder


@pytest.fixture(scope="session")
def synthetic_tokenizer(synthetic_records: dict, tmp_path_factory: pytest.TempPathFactory):
    """A tokenizer built from the synthetic train reports."""
    from medfusion.models.tokenizer import train_wordpiece_tokenizer

    return train_wordpiece_tokenizer([r["report"] for r in synthetic_records["train"]], 200, tmp_path_factory.mktemp("tok"))
