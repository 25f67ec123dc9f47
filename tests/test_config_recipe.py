"""The recipe written in ``medfusion/configs/chest_xray.yaml`` runs as written: its command line, offline.

The recipe switches the config's text encoder with ``--set text_encoder.name_or_path=<minilm_folder>``
and, without a GPU, sets ``training.amp=off`` (a YAML boolean). It is read from the config's comments,
not copied here, so the test follows the file. What the test changes, and only that: ``<minilm_folder>``
is a tiny BERT saved by the test (no model hub), ``<your_manifest.parquet>`` a small generated cohort with the
config's 14 label columns, and the run is shrunk to CPU seconds (project folder, one epoch, 32x32 images).
"""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medfusion.cli import app
from medfusion.config import DemoCohortConfig, load_config
from medfusion.datasets.demo.cohort import generate_demo_cohort
from medfusion.ingest.records import LABEL_PREFIX
from medfusion.models.card import ModelCard
from tests.support.text import write_tiny_text_dir
from tests.support.threads import single_thread

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "medfusion" / "configs" / "chest_xray.yaml"


def recipe() -> list[str]:
    """The ``medfusion train`` command of the config's comments plus its no-GPU line, as arguments."""
    comments = [line.lstrip("#").strip() for line in CONFIG.read_text().splitlines() if line.startswith("#")]
    start = next(i for i, line in enumerate(comments) if line.startswith("medfusion train"))
    command = ""
    for line in comments[start:]:
        command += " " + line.rstrip("\\")
        if not line.endswith("\\"):
            break
    no_gpu = next(line for line in comments if line.startswith("Without a GPU add:"))
    command += " " + no_gpu.removeprefix("Without a GPU add:")
    return shlex.split(command)[1:]  # without the program name


def _manifest(tmp_path: Path, labels: list[str]) -> Path:
    """A small demo cohort's manifest with one seeded 0/1 column per label of the config."""
    cohort = generate_demo_cohort(tmp_path / "cohort", DemoCohortConfig(n_studies=40, image_size=64), progress=False)
    table = pd.read_parquet(cohort.manifest_path)
    table = table.drop(columns=[c for c in table.columns if c.startswith(LABEL_PREFIX)])
    rng = np.random.default_rng(0)
    for label in labels:
        table[LABEL_PREFIX + label] = rng.integers(0, 2, size=len(table)).astype(float)
    path = tmp_path / "manifest.parquet"
    table.to_parquet(path)
    return path


def test_the_recipe_reads_as_documented() -> None:
    args = recipe()
    assert args[:3] == ["train", "-c", "chest_xray"]
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    assert sets == [
        "data.manifest=<your_manifest.parquet>",
        "text_encoder.name_or_path=<minilm_folder>",
        "text_encoder.pooling=mean",
        "training.device=cpu",
        "training.amp=off",
    ]


def test_the_chest_xray_recipe_trains_with_a_local_bert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # the recipe names the shipped config (-c chest_xray): any folder works
    bert = write_tiny_text_dir(tmp_path / "bert")
    manifest = _manifest(tmp_path, load_config(CONFIG).labels)
    args = [a.replace("<minilm_folder>", str(bert)).replace("<your_manifest.parquet>", str(manifest)) for a in recipe()]
    shrink = {
        "project_dir": str(tmp_path / "project"),
        "training.epochs": "1",
        "data.image_size": "[32, 32]",
        "data.num_workers": "0",
    }
    for key, value in shrink.items():
        args += ["--set", f"{key}={value}"]
    with single_thread():
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "test macro AUROC" in result.output
    cards = list((tmp_path / "project" / "training").rglob("medfusion_model.json"))
    assert len(cards) == 1
    card = ModelCard.load(cards[0].parent)
    assert card.tokenizer.source == "bert"  # the local folder, not the config's tiny or hub encoder
    assert card.config.text_encoder.pooling == "mean"
    assert card.config.image_encoder.name == "densenet121" and len(card.labels) == 14
