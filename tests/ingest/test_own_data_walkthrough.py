"""docs/own_data.md followed verbatim: PNG/JPEG + CSV -> import -> manifest -> train -> predictions -> score.

The commands are parsed from the page's ```bash blocks (the config from its ```yaml block, the
predictions step from its ```python block), so the page and this test cannot drift. Only small
settings are appended to keep the run to CPU seconds (``--set`` for train: one epoch, 32², and the
page's MiniLM recipe where the ``real-data`` extra is installed, else the tiny encoder; one worker for score).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from typer.testing import CliRunner

from medfusion.cli import app
from medfusion.datasets.assets import find_minilm_dir
from tests.dicom_sr.validators import dciodvfy_errors

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "own_data.md"
MINILM = find_minilm_dir()
#: The text encoder: the page's MiniLM recipe where the ``real-data`` extra is installed (CI), else tiny.
TEXT_ENCODER = (
    ["--set", f"text_encoder.name_or_path={MINILM}", "--set", "text_encoder.pooling=mean"]
    if MINILM is not None
    else ["--set", "text_encoder.tiny={vocab_size: 300}"]
)
#: Appended to the page's commands: CPU seconds instead of minutes.
TINY: dict[str, list[str]] = {
    "train": [
        *("--set", "training.epochs=1", "--set", "data.image_size=[32, 32]", "--set", "training.batch_size=8"),
        *TEXT_ENCODER,
        *("--threads", "1"),
    ],
    "score": ["--workers", "1", "--no-progress"],
}
N_STUDIES = 40


def blocks(kind: str) -> list[str]:
    """The page's fenced blocks of one language, in order."""
    return re.findall(rf"^```{kind}\n(.*?)^```", DOC.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)


def commands() -> list[list[str]]:
    """Every command line of the page's ```bash blocks (continuations joined, comments dropped)."""
    lines: list[list[str]] = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                lines.append(shlex.split(line))
    return lines


def make_images(folder: Path) -> dict[str, int]:
    """40 studies of 30 patients as 64x64 PNG (8- and 16-bit) and RGB JPEG, plus 3 bad rows; ``table.csv``.

    Returns:
        Bad row number (from 1) -> nothing; the keys are the rows that must be rejected.
    """
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    rows = []
    for i in range(N_STUDIES):
        nodule, effusion = int(rng.random() < 0.4), int(rng.random() < 0.4)
        base = rng.normal(0.4, 0.05, (64, 64)) + 0.4 * nodule * (np.hypot(*np.mgrid[-32:32, -32:32]) < 8)
        base = np.clip(base, 0, 1)
        if i % 3 == 0:
            name = f"images/{i:04d}.png"
            Image.fromarray((base * 65535).astype(np.uint16)).save(folder / name)
        elif i % 3 == 1:
            name = f"images/{i:04d}.png"
            Image.fromarray((base * 255).astype(np.uint8)).save(folder / name)
        else:
            name = f"images/{i:04d}.jpg"
            Image.fromarray((np.stack([base] * 3, -1) * 255).astype(np.uint8), "RGB").save(folder / name)
        text = ("Nodule in the right lung." if nodule else "No nodule.") + (" Effusion." if effusion else "")
        rows.append([name, f"P{i % 30:04d}", f"S{i:04d}", "PA" if i % 2 else "AP", text, nodule, effusion])
    (folder / "images" / "truncated.png").write_bytes((folder / "images" / "0001.png").read_bytes()[:120])
    rows.append(["images/missing.png", "P0100", "S0100", "PA", "x", 0, 0])
    rows.append(["images/truncated.png", "P0101", "S0101", "PA", "x", 1, 0])
    rows.append(["images/0004.png", "P0004", "S0004", "PA", "x", 0, 1])  # duplicate study id
    columns = ["image", "patient_id", "study_id", "view", "report", "nodule", "effusion"]
    pd.DataFrame(rows, columns=columns).to_csv(folder / "table.csv", index=False)
    return {N_STUDIES + 1: 0, N_STUDIES + 2: 0, N_STUDIES + 3: 0}


@pytest.mark.slow
def test_own_data_walkthrough(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad_rows = make_images(tmp_path)
    config = blocks("yaml")[0]
    name = config.splitlines()[0].removeprefix("#").strip()
    (tmp_path / name).write_text(config, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    steps = commands()
    assert [c[:2] for c in steps] == [
        ["medfusion", "import-images"],
        ["medfusion", "build-manifest"],
        ["medfusion", "train"],
        ["medfusion", "score"],
    ]
    outputs: dict[str, str] = {}
    for argv in steps:
        result = CliRunner().invoke(app, argv[1:] + TINY.get(argv[1], []))
        assert result.exit_code == 0, (argv, result.output)
        outputs[argv[1]] = result.output

    # import: valid DICOM for every good row, bad rows listed with their reasons
    assert f"imported {N_STUDIES} studies" in outputs["import-images"]
    assert "rejected rows: 3" in outputs["import-images"]
    rejected = pd.read_csv(tmp_path / "imported" / "rejected.csv")
    assert [int(r.split("row ")[1]) for r in rejected["row"]] == sorted(bad_rows)
    reasons = list(rejected["reason"])
    assert reasons[0] == "image file not found"
    assert "truncated" in reasons[1]
    assert reasons[2].startswith("duplicate study_id")
    files = sorted((tmp_path / "imported" / "dicom").glob("*.dcm"))
    assert len(files) == N_STUDIES
    bits = {int(pydicom.dcmread(f).BitsStored) for f in files}
    assert bits == {8, 16}
    for path in files:
        assert dciodvfy_errors(path) == []
    uids = {str(pydicom.dcmread(f).StudyInstanceUID) for f in files}

    # manifest: every imported study, labels from the label file, reports linked
    manifest = pd.read_parquet(tmp_path / "manifest.parquet")
    assert set(manifest["study_uid"]) == uids
    assert set(manifest["split"]) == {"train", "val", "test"}
    assert "splits (exact)" in outputs["build-manifest"]

    # train: ran, logged the predictions artifact; the page's python block reads it back
    run_id = re.search(r"run ([0-9a-f]{32})", outputs["train"])
    assert run_id is not None, outputs["train"]
    assert "test predictions: artifact predictions/test_predictions.parquet" in outputs["train"]
    # the page's own snippet, in a Python of its own as a user runs it (mlflow.set_tracking_uri there
    # writes the environment: it must not leak into this test process)
    snippet = f"RUN_ID = {run_id[1]!r}\n" + blocks("python")[0] + "\npredictions.to_parquet('snippet.parquet')\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    done = subprocess.run([sys.executable, "-c", snippet], cwd=Path.cwd(), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    predictions = pd.read_parquet(Path.cwd() / "snippet.parquet")
    assert len(predictions) == int((manifest["split"] == "test").sum())
    assert {"prob_nodule", "prob_effusion", "y_nodule", "y_effusion"} <= set(predictions.columns)

    # patient ids went into the DICOM files only: not into any output line or CSV the import wrote
    for text in [*outputs.values(), *(p.read_text() for p in (tmp_path / "imported").glob("*.csv"))]:
        assert re.search(r"\bP0\d{3}\b", text) is None

    # score: one result per imported study
    results = pd.concat(pd.read_parquet(p) for p in sorted((tmp_path / "scores" / "results").glob("*.parquet")))
    assert sorted(results["study_uid"]) == sorted(uids)
    assert results["prob_nodule"].between(0, 1).all()
