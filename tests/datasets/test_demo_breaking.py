"""Demo-cohort knobs that build cohorts to break fusion; the defaults leave today's cohort byte for byte."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medfusion.config import DemoCohortConfig
from medfusion.datasets.demo.cohort import DEMO_LABELS, generate_demo_cohort
from medfusion.ingest.manifest import read_manifest

SMALL = {"n_studies": 24, "image_size": 32, "broken_files": 1, "seed": 0}
#: SHA-256 over (relative path, bytes) of every file but manifest.parquet of the SMALL cohort, as the
#: generator wrote it before the knobs existed (commit 4180d99).
DEFAULT_DIGEST = "a56d52e971e3b6c91dbfb9ffa93f97ad89aecb63858bfa0039cc11ffe74e41f2"
_FINDING = re.compile(r"effusion|fracture", re.IGNORECASE)
_NEGATION = re.compile(r"\b(no|without|negative for)\b", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.;])\s+|\n")
_CONTEXT = re.compile(r"fever|febrile|productive|wbc|leukocytosis", re.IGNORECASE)


def _digest(root: Path, under: str = "") -> str:
    h = hashlib.sha256()
    for p in sorted((root / under).rglob("*") if under else root.rglob("*")):
        if p.is_file() and p.name != "manifest.parquet":
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _make(tmp: Path, name: str, **knobs: object) -> Path:
    return generate_demo_cohort(tmp / name, DemoCohortConfig(**SMALL, **knobs), progress=False).root


@pytest.fixture(scope="module")
def default(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make(tmp_path_factory.mktemp("demo"), "default")


def test_defaults_give_todays_cohort_byte_for_byte(default: Path) -> None:
    assert _digest(default) == DEFAULT_DIGEST
    assert set(json.loads((default / "cohort.json").read_text())) == {
        "generator", "seed", "n_studies", "image_size", "broken_files", "labels",
    }  # fmt: skip


def test_image_signal_zero_draws_no_finding_and_changes_nothing_else(default: Path, tmp_path: Path) -> None:
    root = _make(tmp_path, "noimage", image_signal=0.0)
    for name in ("labels.csv", "evidence.json"):
        assert (root / name).read_bytes() == (default / name).read_bytes()
    assert _digest(root, "reports") == _digest(default, "reports")
    assert _digest(root, "dicom") != _digest(default, "dicom")
    found = set()
    for npz in (root / "masks").glob("*.npz"):
        with np.load(npz) as masks:
            found |= set(masks.files) & {"nodule", "cardiomegaly", "consolidation", "pneumonia"}
    assert found == set()  # no lesion anywhere, whatever the labels say
    assert json.loads((root / "cohort.json").read_text())["image_signal"] == 0.0


def test_text_signal_zero_writes_no_finding_and_changes_nothing_else(default: Path, tmp_path: Path) -> None:
    root = _make(tmp_path, "notext", text_signal=0.0)
    assert (root / "labels.csv").read_bytes() == (default / "labels.csv").read_bytes()
    assert _digest(root, "masks") == _digest(default, "masks")
    texts = read_manifest(root / "manifest.parquet", labels=list(DEMO_LABELS))["report_text"].tolist()
    assert len(texts) > 10
    for text in texts:  # a finding word only ever in a negated sentence; no infectious context
        for sentence in _SENTENCE.split(text):
            if _FINDING.search(sentence):
                assert _NEGATION.search(sentence), sentence
        assert not _CONTEXT.search(text), text


def test_findings_per_modality(tmp_path: Path) -> None:
    root = _make(tmp_path, "some", image_findings=["nodule"])
    found = set()
    for npz in (root / "masks").glob("*.npz"):
        with np.load(npz) as masks:
            found |= set(masks.files)
    assert "nodule" in found and not found & {"cardiomegaly", "consolidation", "pneumonia"}


def test_prevalence_sets_every_label(tmp_path: Path) -> None:
    n = 60
    root = generate_demo_cohort(
        tmp_path / "rare", DemoCohortConfig(n_studies=n, image_size=32, broken_files=0, prevalence=0.1), progress=False
    ).root
    labels = pd.read_csv(root / "labels.csv")
    counts = {name: int(labels[col].sum()) for name in DEMO_LABELS for col in labels.columns if col.endswith(name)}
    assert counts == dict.fromkeys(DEMO_LABELS, 6), counts
