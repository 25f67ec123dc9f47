"""Faithfulness metrics: the exactness of the random baselines, and the metrics on a model whose evidence
is known by construction (a text-only model trained to find one sentence among neutral fillers).

Measurements on the demo champion live in ``benchmarks/faithfulness.py``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest

from medfusion.explain import explain_study
from medfusion.explain.faithfulness import (
    dilate,
    evaluate,
    locate_spans,
    pointing_hit,
    pooled,
    random_topk_hit,
    tokens_inside,
    topk_hit,
)
from medfusion.inference import Predictor, StudyInput
from tests.support.synthetic import Record, fast_config, train_quietly


@pytest.mark.parametrize("n,m,k", [(10, 3, 2), (7, 1, 3), (6, 6, 1), (5, 0, 2), (4, 2, 9)])
def test_random_topk_baseline_is_the_exact_enumerated_rate(n: int, m: int, k: int) -> None:
    inside = np.arange(n) < m
    draws = list(itertools.combinations(range(n), min(k, n)))
    assert random_topk_hit(n, m, k) == pytest.approx(np.mean([inside[list(d)].any() for d in draws]))


def test_pointing_hit_uses_the_peak_and_misses_on_flat_maps() -> None:
    mask = np.zeros((16, 16), bool)
    mask[10:13, 2:5] = True
    heat = np.zeros((8, 8), np.float32)
    heat[5, 1] = 1.0  # upsampled x2: peak near (11, 3)
    assert pointing_hit(heat, mask)
    heat = np.zeros((8, 8), np.float32)
    heat[1, 6] = 1.0
    assert not pointing_hit(heat, mask)
    assert not pointing_hit(np.full((8, 8), 0.5, np.float32), np.ones((16, 16), bool))
    grown = dilate(mask, 2)
    assert grown[8, 3] and not grown[7, 3] and grown.sum() > mask.sum()


def test_token_hits_and_span_location() -> None:
    report = "EXAMINATION: Chest.\nFINDINGS: No pneumothorax. Small left pleural effusion."
    model_text = report.strip()
    start = report.index("Small")
    [span] = locate_spans(model_text, report, [{"text": "Small left pleural effusion.", "start": start}])
    assert model_text[span[0] : span[1]] == "Small left pleural effusion."
    spans = [(0, 0), (0, 11), (start, start + 5), (start + 6, start + 10), (0, 0)]
    inside = tokens_inside(spans, [span])
    real = np.array([a < b for a, b in spans])
    assert inside.tolist() == [False, False, True, True, False]
    assert topk_hit(np.array([9.0, 0.9, 0.1, 0.2, 9.0]), inside, real, 1) is False  # specials never count
    assert topk_hit(np.array([0.0, 0.9, 0.1, 0.2, 0.0]), inside, real, 2) is True


#: Neutral sentences: none shares a word with :data:`EVIDENCE`.
FILLERS = (
    "Heart size normal.", "No pneumothorax.", "Mild degenerative change.", "Lines unchanged.", "Trachea midline.",
    "Bones intact.", "Mediastinum stable.", "No free air.", "Lungs expanded.", "Old rib fracture.",
)  # fmt: skip
#: The only sentence that says anything about the label.
EVIDENCE = "Small effusion is seen."
LABEL = "effusion"


def _evidence_cohort(seed: int = 0) -> tuple[dict[str, list[Record]], dict[str, dict]]:
    """Report-only records (positive: 3 fillers and :data:`EVIDENCE` in random order; negative: 4 fillers)
    and their ``evidence.json`` (the evidence sentence of each positive, as the demo cohort stores it)."""
    rng = np.random.default_rng(seed)
    records: dict[str, list[Record]] = {}
    evidence: dict[str, dict] = {}
    k = 0
    for split, n in {"train": 128, "val": 32, "test": 48}.items():
        records[split] = []
        for _ in range(n):
            positive = bool(rng.integers(0, 2))
            sentences = [str(x) for x in rng.choice(FILLERS, 3 if positive else 4, replace=False)]
            if positive:
                sentences.insert(int(rng.integers(0, 4)), EVIDENCE)
            report = "FINDINGS: " + " ".join(sentences)
            uid = f"2.25.{k}"
            if positive:
                span = {"text": EVIDENCE, "start": report.index(EVIDENCE), "label": LABEL, "assertion": "positive"}
                evidence[uid] = {"spans": [span]}
            label = np.array([positive], dtype=np.float32)
            records[split].append({"image": [], "report": report, "label": label, "meta": {"study_uid": uid}})
            k += 1
    return records, evidence


@dataclass(frozen=True)
class EvidenceModel:
    """A model trained on :func:`_evidence_cohort`.

    Attributes:
        predictor: The model.
        positives: The test split's positive records.
        evidence: The cohort's evidence (study UID -> ``{"spans": [...]}``).
        auroc: The label's test AUROC.
    """

    predictor: Predictor
    positives: list[Record]
    evidence: dict[str, dict]
    auroc: float


@pytest.fixture(scope="module")
def evidence_model(tmp_path_factory: pytest.TempPathFactory) -> EvidenceModel:
    """A text-only tiny BERT trained on :func:`_evidence_cohort` (seconds on a quiet CPU)."""
    records, evidence = _evidence_cohort()
    result = train_quietly(fast_config("text_only", labels=[LABEL]), records, tmp_path_factory.mktemp("evidence_run"))
    positives = [r for r in records["test"] if r["label"][0] == 1]
    predictor = Predictor.from_dir(result.model_dir, device="cpu")
    return EvidenceModel(predictor, positives, evidence, float(result.test_metrics[f"auroc_{LABEL}"]))


@pytest.mark.slow
def test_gradient_tokens_hit_the_known_evidence_far_above_the_exact_random_baseline(
    evidence_model: EvidenceModel,
) -> None:
    predictor, positives, evidence = evidence_model.predictor, evidence_model.positives, evidence_model.evidence
    assert evidence_model.auroc > 0.95  # the model found the sentence: it is the only evidence there is
    rows = evaluate(predictor, positives, evidence, methods=("gradient",), ks=(1, 3))
    for k in (1, 3):
        row = pooled(rows, "gradient", f"top{k}_token_hit")
        assert row.n == len(positives) >= 16
        assert 0.1 < row.baseline < 0.8  # the evidence is a minority of the tokens: chance is far from 1
        assert row.hit_rate >= row.baseline + 0.5 * (1 - row.baseline), row  # at least half the room above chance


def _logit_without(predictor: Predictor, study: StudyInput, spans: list[tuple[int, int]], tokens: np.ndarray) -> float:
    """The logit (before calibration) of label 0 with the characters of ``tokens`` blanked out of the report."""
    chars = list(study.report_text)
    for t in tokens:
        a, b = spans[t]
        chars[a:b] = " " * (b - a)
    [p] = predictor.predict([StudyInput(study.image_paths, "".join(chars))])
    return float(predictor.loaded.calibration.logits(p.probabilities)[0])


@pytest.mark.slow
def test_deleting_the_top_gradient_tokens_moves_the_logit_more_than_the_bottom_ones(
    evidence_model: EvidenceModel,
) -> None:
    """Deletion check: the 3 best vs the 3 worst gradient tokens of each positive blanked out."""
    predictor, positives = evidence_model.predictor, evidence_model.positives
    top, bottom = [], []
    for record in positives:
        study = StudyInput(record["image"], record["report"])
        ex = explain_study(predictor, study, ("gradient",))
        real = np.flatnonzero([a < b for a, b in ex.token_spans])
        order = real[np.argsort(-ex.token_scores["gradient"][0][real], kind="stable")]
        base = _logit_without(predictor, study, ex.token_spans, order[:0])
        top.append(base - _logit_without(predictor, study, ex.token_spans, order[:3]))
        bottom.append(abs(base - _logit_without(predictor, study, ex.token_spans, order[-3:])))
    top_, bottom_ = np.array(top), np.array(bottom)
    assert (top_ > 0).all()  # the evidence gone, the label is less likely in every study
    assert (top_ > bottom_).mean() >= 0.8 and top_.mean() > 2 * bottom_.mean(), (top_.mean(), bottom_.mean())


@pytest.mark.slow
def test_word_deletion_top_word_is_in_the_planted_sentence_and_beats_both_baselines(
    evidence_model: EvidenceModel,
) -> None:
    """Occlusion's best word lies in :data:`EVIDENCE` (the only sentence about the label), and its AOPC
    beats random and frequency-matched deletions (the fillers share words like "is", "no")."""
    from medfusion.explain.aopc import evaluate_aopc

    predictor, positives = evidence_model.predictor, evidence_model.positives
    evidence_words = {"small", "effusion", "is", "seen"}
    hits = []
    for record in positives:
        ex = explain_study(predictor, StudyInput(record["image"], record["report"]), ("occlusion",))
        scores = ex.word_scores["occlusion"][0]
        best = ex.words[int(np.argmax(scores))]
        start = record["report"].index(EVIDENCE)
        hits.append(start <= best.span[0] < start + len(EVIDENCE) and best.text.lower() in evidence_words)
        assert scores.max() == pytest.approx(1.0)  # signed, scaled to max |s| 1
    assert np.mean(hits) >= 0.9, np.mean(hits)
    studies = [StudyInput(r["image"], r["report"]) for r in positives[:16]]
    rows, curves = evaluate_aopc(predictor, studies, methods=("occlusion",), max_k=4, draws=4)
    [row] = rows
    assert row.n == len(curves) >= 8
    assert row.passed and row.aopc > 2 * row.random and row.aopc > 2 * row.matched, row
