"""Deletion curves: AOPC against hand-computed values, the baselines' word choice, token deletion."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from medfusion.explain.aopc import (
    Curves,
    aopc,
    bootstrap_interval,
    document_frequency,
    frequency_matched,
    summarize,
)
from medfusion.explain.text import delete_tokens
from medfusion.explain.words import Word


def test_aopc_is_the_mean_drop_over_k() -> None:
    # logit 3.0; deleting the top 1, 2, 3 words leaves 2.0, 2.5, 0.5: drops 1.0, 0.5, 2.5
    assert aopc([3.0 - 2.0, 3.0 - 2.5, 3.0 - 0.5]) == pytest.approx((1.0 + 0.5 + 2.5) / 3)
    assert aopc([]) == 0.0


def test_summary_pairs_each_method_with_its_baselines() -> None:
    curves = [
        Curves("a", 2, {"m": np.array([2.0, 2.0]), "s": np.array([0.0, 0.0])}, np.array([0.0, 0.0]),
               {"m": np.array([1.0, 1.0]), "s": np.array([1.0, 1.0])}),
        Curves("a", 2, {"m": np.array([1.0, 3.0]), "s": np.array([1.0, 1.0])}, np.array([1.0, 1.0]),
               {"m": np.array([0.0, 0.0]), "s": np.array([0.0, 2.0])}),
    ]  # fmt: skip
    m, s = summarize(curves)
    assert (m.method, m.n, m.aopc, m.random, m.matched) == ("m", 2, 2.0, 0.5, 0.5)
    assert m.vs_random[0] > 0 and m.vs_matched[0] > 0 and m.passed  # +2 and +1 in both pairs
    assert (s.aopc, s.random, s.matched) == (0.5, 0.5, 1.0)
    assert not s.passed  # no better than random, worse than frequency-matched


def test_bootstrap_interval_brackets_the_mean() -> None:
    diffs = np.array([0.1, 0.3, 0.2, 0.4, 0.0])
    low, high = bootstrap_interval(diffs)
    assert low < diffs.mean() < high and low >= 0.0
    assert bootstrap_interval(np.array([])) == (0.0, 0.0)


def _words(texts: list[str]) -> list[Word]:
    out, at = [], 0
    for i, t in enumerate(texts):
        out.append(Word(t, (at, at + len(t)), (i + 1,)))
        at += len(t) + 1
    return out


def test_frequency_matched_words_share_the_frequency_profile_of_the_top_words() -> None:
    df = document_frequency(["no effusion is seen", "no fracture is seen", "no edema is seen", "small effusion"])
    assert df["no"] == 3 and df["effusion"] == 2 and df["small"] == 1
    words = _words(["no", "effusion", "is", "seen", "small", "edema"])
    rng = np.random.default_rng(0)
    for _ in range(20):
        # the method's top words: "no" (df 3) and "small" (df 1)
        matched = frequency_matched([0, 4, 1, 2, 3, 5], words, df, 2, rng)
        assert matched[0] in (2, 3)  # "is"/"seen": df 3 like "no"
        assert matched[1] == 5  # "edema": df 1 like "small"
    assert frequency_matched([0, 1], words, Counter(), 0, rng) == []


def test_deleted_tokens_leave_the_report_and_later_tokens_move_up() -> None:
    batch = {
        "input_ids": torch.tensor([[2, 10, 11, 12, 3, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 0]]),
        "text_present": torch.tensor([1.0]),
    }
    drops = torch.zeros(2, 6, dtype=torch.bool)
    drops[1, 2] = True  # copy 1 without token 11
    out = delete_tokens(batch, drops)
    assert out["input_ids"][0].tolist() == [2, 10, 11, 12, 3, 0]
    assert out["input_ids"][1, :4].tolist() == [2, 10, 12, 3]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]]
    assert out["text_present"].shape == (2,)
