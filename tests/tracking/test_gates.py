"""Each promotion gate, exactly at and past its bound."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medfusion.config import PromotionGates
from medfusion.tracking.promotion import ModelEvaluation, check_gates, gain_over_champion

GATES = PromotionGates(auroc_margin=0.01, max_ece=0.1, max_label_auroc_drop=0.05, max_latency_ms=100)


def _ev(macro: float = 0.8, ece: float = 0.05, a: float = 0.8, b: float = 0.8, latency: float = 50) -> ModelEvaluation:
    return ModelEvaluation(
        version="1", macro_auroc=macro, ece=ece, label_auroc={"a": a, "b": b}, latency_p95_ms=latency
    )


def test_equal_challenger_passes() -> None:
    assert check_gates(_ev(), _ev(), GATES) == []


@pytest.mark.parametrize(
    ("challenger", "reason"),
    [
        (_ev(macro=0.78), "macro AUROC 0.780 < champion 0.800"),
        (_ev(ece=0.11), "ECE 0.110 > bound 0.1"),
        (_ev(a=0.74), "a AUROC drops 0.060 > bound 0.05"),
        (_ev(latency=101), "p95 latency 101 ms > bound 100 ms"),
    ],
)
def test_each_gate_rejects_past_its_bound(challenger: ModelEvaluation, reason: str) -> None:
    failures = check_gates(challenger, _ev(), GATES)
    assert len(failures) == 1 and failures[0].startswith(reason), failures


def test_within_margin_passes() -> None:
    assert check_gates(_ev(macro=0.791, a=0.76), _ev(), GATES) == []


def test_first_promotion_needs_better_than_chance_and_absolute_gates() -> None:
    assert check_gates(_ev(), None, GATES) == []
    assert check_gates(_ev(macro=0.5), None, GATES) == ["macro AUROC 0.500 is not above chance"]
    assert check_gates(_ev(ece=0.2), None, GATES) == ["ECE 0.200 > bound 0.1"]


def _paired(seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """A frozen set of 200 studies of 100 patients, a weak model's and a strong model's (N, 2) probabilities."""
    rng = np.random.default_rng(seed)
    y = (rng.random((200, 2)) < 0.3).astype(float)
    eval_set = pd.DataFrame({"patient_pseudonym": [f"p{i // 2}" for i in range(200)], "y_a": y[:, 0], "y_b": y[:, 1]})
    weak = 1 / (1 + np.exp(-(0.8 * y + rng.normal(size=y.shape))))  # AUROC about 0.7
    strong = 1 / (1 + np.exp(-(3.0 * y + rng.normal(size=y.shape))))  # AUROC about 0.98
    return eval_set, weak, strong


def _scored(probs: np.ndarray, eval_set: pd.DataFrame) -> ModelEvaluation:
    from medfusion.metrics import compute_metrics

    ok = ~np.isnan(probs).any(1)  # as evaluate_version scores: the studies the model could score
    m = compute_metrics(probs[ok], eval_set[["y_a", "y_b"]].to_numpy()[ok], ["a", "b"])
    return ModelEvaluation(
        version="2", macro_auroc=m["macro_auroc"], ece=0.05, label_auroc={"a": m["auroc_a"], "b": m["auroc_b"]},
        latency_p95_ms=50, probabilities=probs,
    )  # fmt: skip


def test_ci_gain_gate_rejects_a_challenger_equal_to_the_champion_and_passes_a_clearly_better_one() -> None:
    eval_set, weak, strong = _paired()
    gates = GATES.model_copy(update={"require_ci_gain": True})
    champion = _scored(weak, eval_set)
    same = gain_over_champion(_scored(weak.copy(), eval_set), champion, eval_set, ["a", "b"])
    assert same is not None and same.macro_auroc == 0 and same.ci_low == same.ci_high == 0 and same.studies == 200
    failures = check_gates(_scored(weak.copy(), eval_set), champion, gates, same)
    assert failures == ["macro AUROC gain +0.000 over champion: 95 % CI lower bound +0.000 is not above 0"]
    assert check_gates(_scored(weak.copy(), eval_set), champion, GATES, same) == []  # the gate is opt-in
    better = gain_over_champion(_scored(strong, eval_set), champion, eval_set, ["a", "b"])
    assert better is not None and better.ci_low > 0.1 and better.ci_low < better.macro_auroc < better.ci_high
    assert check_gates(_scored(strong, eval_set), champion, gates, better) == []
    assert check_gates(_scored(strong, eval_set), champion, gates, None)[0].startswith("no paired evaluation")


def test_ci_gain_pairs_only_studies_both_models_scored() -> None:
    eval_set, weak, strong = _paired(1)
    gappy = strong.copy()
    gappy[:10] = np.nan  # the challenger could not score 10 studies
    gain = gain_over_champion(_scored(gappy, eval_set), _scored(weak, eval_set), eval_set, ["a", "b"])
    assert gain is not None and gain.studies == 190 and np.isfinite(gain.ci_low)
