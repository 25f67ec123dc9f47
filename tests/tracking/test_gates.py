"""Each promotion gate, exactly at and past its bound."""

from __future__ import annotations

import pytest

from medfusion.config import PromotionGates
from medfusion.tracking.promotion import ModelEvaluation, check_gates

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
