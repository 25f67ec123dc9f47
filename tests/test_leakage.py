"""Report-text leakage probe: label words alone, and scrubbing them from reports."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from medfusion.leakage import label_terms, label_word_auroc, scrub, term_counts

ROOT = Path(__file__).resolve().parents[1]


def test_terms_and_scrub_remove_every_labels_words_whole_word_only() -> None:
    assert label_terms("pleural_effusion") == ("pleural effusion",)
    assert label_terms("Nodule") == ("nodule", "nodules", "nodular")
    text = "FINDINGS: Small left pleural effusion. No nodules. Effusions resolved. Nodularity? Heart enlarged."
    assert (
        scrub(text, ["effusion", "nodule"])
        == "FINDINGS: Small left pleural . No . resolved. Nodularity? Heart enlarged."
    )
    assert scrub("Cardiac enlargement noted.", ["cardiomegaly"]) == " noted."
    assert term_counts(["effusion, effusions", "none", ""], "effusion")[:, 0].tolist() == [2.0, 0.0, 0.0]


def test_label_words_alone_read_a_label_the_report_names_and_not_one_it_never_names() -> None:
    rng = np.random.default_rng(0)

    def cohort(n: int) -> tuple[list[str], np.ndarray]:
        y = (rng.random((n, 2)) < 0.4).astype(float)
        reports = [
            ("Small effusion." if a else "Lungs clear.") + (" Fever." if b and rng.random() < 0.5 else "") for a, b in y
        ]
        y[::7, 0] = np.nan  # unknown labels are left out
        return reports, y

    (train, y_train), (test, y_test) = cohort(200), cohort(100)
    auroc = label_word_auroc(train, y_train, test, y_test, ["effusion", "fracture"])
    assert auroc["effusion"] == 1.0  # the word is the label
    assert auroc["fracture"] == 0.5  # never named: nothing to read


@pytest.mark.slow
def test_ablation_prints_the_leakage_probe_and_reprints_it_without_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = importlib.util.spec_from_file_location("ablation_leakage", ROOT / "benchmarks" / "ablation.py")
    assert spec is not None and spec.loader is not None
    ablation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablation)
    args = ["--config", str(ROOT / "medfusion" / "configs" / "demo.yaml"), "--fusions", "text_only", "--seeds", "0"]
    for item in (
        f"project_dir={tmp_path}",
        "data.demo={n_studies: 96, image_size: 32, broken_files: 0}",
        "data.image_size=[32, 32]",
        "training.epochs=2",
        "text_encoder.tiny={vocab_size: 200}",
    ):
        args += ["--set", item]
    assert ablation.main([*args, "--out", str(tmp_path / "abl")]) == 0
    first = capsys.readouterr().out
    assert "leakage probe" in first and "| effusion |" in first
    probe = {r["label"]: r for r in json.loads((tmp_path / "abl" / "leakage.json").read_text())}
    assert probe["effusion"]["label_words"] > 0.6  # the demo reports name their effusions (or negate them)
    assert probe["nodule"]["label_words"] == 0.5  # and never their nodules (image-only)
    assert len(probe["effusion"]["text_model_scrubbed"]) == 1
    assert ablation.main([*args, "--out", str(tmp_path / "abl"), "--leakage-only"]) == 0
    again = {r["label"]: r for r in json.loads((tmp_path / "abl" / "leakage.json").read_text())}
    assert again == probe  # the same models, the same reports: the same figures
