"""The evidence panel: word evidence HTML, which methods are offered, lazily merged explanations."""

from __future__ import annotations

import numpy as np

from medfusion.explain import StudyExplanation
from medfusion.explain.checks import CHECKS_FILE, read_checks, record_checks
from medfusion.explain.words import negation_scopes, report_words
from medfusion.review.explanations import ExplanationCache, covers, merged
from medfusion.review.panels import evidence_methods, failed_checks, word_evidence_html

TEXT = "No pleural effusion. Heart is enlarged."


def _words():
    spans = [(0, 0)] + [(m, m + 1) for m in range(len(TEXT))] + [(0, 0)]  # a token per character
    return report_words(TEXT, spans)


def test_word_evidence_marks_for_and_against_and_underlines_negation() -> None:
    words = _words()
    names = [w.text for w in words]
    scores = np.zeros(len(words))
    scores[names.index("effusion")] = -0.8  # evidence against (negated)
    scores[names.index("enlarged")] = 1.0
    html = word_evidence_html(TEXT, words, scores, negation_scopes(TEXT), top_k=2)
    assert 'title="against the label (-0.80)"' in html and "76, 139, 245" in html  # blue
    assert 'title="for the label (+1.00)"' in html and ">enlarged</mark>" in html
    assert html.count('title="negated"') >= 1 and "pleural" in html.split('title="negated"')[1]
    assert "Heart" in html and "<mark" not in html.split("Heart")[0].split("effusion")[-1]
    plain = word_evidence_html(TEXT, words, None, [])
    assert plain == TEXT  # nothing to escape here


def test_failed_text_methods_are_hidden_with_their_reason(tmp_path) -> None:
    record_checks(tmp_path, "m-1", {"attention": {"check": "aopc", "passed": False}})
    record_checks(tmp_path, "m-1", {"occlusion": {"check": "aopc", "passed": True}})  # merged, not replaced
    assert set(read_checks(tmp_path, "m-1")) == {"attention", "occlusion"}
    assert read_checks(tmp_path, "another-model") == {}  # a stale file of another model is ignored
    failed = failed_checks(tmp_path, "m-1")
    shown, hidden = evidence_methods(
        ["attention", "gradient", "occlusion"], ["occlusion", "gradient", "attention"], failed
    )
    assert shown == ["occlusion", "gradient"]
    assert hidden == {"attention": "failed the deletion (AOPC) faithfulness check"}
    (tmp_path / CHECKS_FILE).write_text("{not json", encoding="utf-8")
    assert failed_checks(tmp_path, "m-1") == {}
    assert failed_checks(None, "m-1") == {}


def _part(rows: list[int], value: float) -> StudyExplanation:
    maps = np.zeros((3, 4, 4), np.float32)
    maps[rows] = value
    return StudyExplanation(
        labels=["a", "b", "c"],
        probabilities=np.zeros(3),
        thresholds=np.full(3, 0.5),
        image=np.zeros((4, 4), np.float32),
        heatmaps={"saliency": maps},
        available=("saliency", "gradcam"),
        computed={"saliency": frozenset(rows)},
    )


def test_lazily_computed_label_rows_merge_without_touching_the_cached_arrays() -> None:
    base = _part([0], 1.0)
    assert covers(base, ["saliency"], [0]) and not covers(base, ["saliency"], [1])
    assert not covers(base, ["gradcam"], [0]) and covers(base, ["cross_attention"], [2])  # n/a: nothing to do
    cache = ExplanationCache()
    cache.put("k", base)
    out = cache.merge("k", _part([2], 2.0))
    assert out.computed["saliency"] == {0, 2}
    assert [float(out.heatmaps["saliency"][i].max()) for i in range(3)] == [1.0, 0.0, 2.0]
    assert float(base.heatmaps["saliency"][2].max()) == 0.0  # another session's copy is unchanged
    assert cache.get("k") is out
    assert merged(out, _part([1], 3.0)).computed["saliency"] == {0, 1, 2}
