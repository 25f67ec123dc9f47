"""Worklist: scores joined with review state, filtered and sorted by priority."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medfusion.results import labels_of
from medfusion.review.store import Decision, ReviewStore, Shown
from medfusion.review.worklist import WorklistQuery, build_worklist, worklist_page


def scoring_output() -> pd.DataFrame:
    """Four studies in the scoring contract's columns (thresholds 0.5 nodule, 0.3 effusion)."""
    probs = {"1.1": (0.95, 0.10), "1.2": (0.55, 0.29), "1.3": (0.20, 0.60), "1.4": (0.05, 0.02)}
    rows = []
    for uid, (nodule, effusion) in probs.items():
        rows.append(
            {
                "study_uid": uid,
                "prob_nodule": nodule,
                "prob_effusion": effusion,
                "decision_nodule": nodule >= 0.5,
                "decision_effusion": effusion >= 0.3,
                "threshold_nodule": 0.5,
                "threshold_effusion": 0.3,
                "model_name": "medfusion",
                "model_version": "2",
                "scored_at": "2026-01-01T00:00:00+00:00",
                "status": "UNVERIFIED",
            }
        )
    return pd.DataFrame(rows)


def _empty() -> pd.Series:
    """No study reviewed (:meth:`ReviewStore.reviewed_counts` of an empty store)."""
    return pd.Series(dtype="int64")


def test_priority_puts_the_most_suspicious_first() -> None:
    results = scoring_output()
    assert labels_of(results) == ["nodule", "effusion"]
    wl = build_worklist(results, _empty())
    # excess over threshold: 1.1 nodule +0.45, 1.3 effusion +0.30, 1.2 nodule +0.05, 1.4 none positive
    assert list(wl["study_uid"]) == ["1.1", "1.3", "1.2", "1.4"]
    assert list(wl["top_label"]) == ["nodule", "effusion", "nodule", "effusion"]
    assert wl.loc[0, "positives"] == "nodule" and wl.loc[3, "n_positive"] == 0
    assert set(wl["state"]) == {"unreviewed"}


def test_uncertain_sort_and_label_filter() -> None:
    wl = build_worklist(scoring_output(), _empty(), WorklistQuery(sort="uncertain"))
    # smallest |p - t| over labels: 1.2 0.01, 1.1 0.20, 1.4 0.28, 1.3 0.30
    assert list(wl["study_uid"]) == ["1.2", "1.1", "1.4", "1.3"]
    assert wl.loc[0, "margin"] == pytest.approx(0.01)
    wl = build_worklist(
        scoring_output(), _empty(), WorklistQuery(label="nodule", prob_min=0.1, prob_max=0.9, sort="probability")
    )
    assert list(wl["study_uid"]) == ["1.2", "1.3"]
    assert list(wl["top_prob"]) == [0.55, 0.20]
    wl = build_worklist(scoring_output(), _empty(), WorklistQuery(label="effusion", positive_only=True))
    assert list(wl["study_uid"]) == ["1.3"]
    with pytest.raises(ValueError, match="unknown label"):
        build_worklist(scoring_output(), _empty(), WorklistQuery(label="fracture"))


def test_review_state_comes_from_the_store(tmp_path) -> None:
    store = ReviewStore(tmp_path / "review.sqlite")

    def decide(uid: str, label: str) -> Decision:
        return Decision(uid, label, "agree", "alice", "medfusion", "2", Shown(0.5, 0.5))

    store.record_many([decide("1.1", "nodule"), decide("1.1", "effusion"), decide("1.3", "effusion")])
    store.record(decide("1.3", "effusion"))  # re-decided: still one label reviewed
    wl = build_worklist(scoring_output(), store.reviewed_counts(["nodule", "effusion"]))
    state = dict(zip(wl["study_uid"], zip(wl["state"], wl["reviewed"], strict=True), strict=True))
    assert state == {
        "1.1": ("reviewed", "2/2"),
        "1.3": ("partial", "1/2"),
        "1.2": ("unreviewed", "0/2"),
        "1.4": ("unreviewed", "0/2"),
    }
    todo = build_worklist(
        scoring_output(), store.reviewed_counts(["nodule", "effusion"]), WorklistQuery(states=("unreviewed", "partial"))
    )
    assert list(todo["study_uid"]) == ["1.3", "1.2", "1.4"]


def test_positive_calls_and_review_state_on_a_wide_output() -> None:
    """Nine labels (positives keyed across a byte boundary) and 400 studies: every row's positive
    calls, focus label and review state as spelled out one study at a time."""
    rng = np.random.default_rng(7)
    labels = [f"finding{i}" for i in range(9)]
    uids = [f"2.25.{i}" for i in range(400)]
    probs = rng.random((400, 9))
    results = pd.DataFrame({"study_uid": uids})
    for i, label in enumerate(labels):
        results[f"prob_{label}"] = probs[:, i]
        results[f"threshold_{label}"] = 0.5
    reviewed = pd.Series(rng.integers(0, 10, 400), index=uids)
    wl = build_worklist(results, reviewed[reviewed > 0]).set_index("study_uid").loc[uids]
    expected = [", ".join(lab for lab, p in zip(labels, row, strict=True) if p >= 0.5) for row in probs]
    assert list(wl["positives"]) == expected
    assert list(wl["top_label"]) == [labels[i] for i in np.argmax(probs - 0.5, axis=1)]
    assert list(wl["reviewed"]) == [f"{n}/9" for n in reviewed]
    assert list(wl["state"]) == ["unreviewed" if n == 0 else "reviewed" if n == 9 else "partial" for n in reviewed]


@pytest.mark.parametrize(
    ("studies", "asked", "rows", "number", "pages", "first"),
    [
        (250, 1, 100, 1, 3, 0),
        (250, 3, 100, 3, 3, 200),  # the last page holds the remaining 50
        (250, 9, 100, 3, 3, 200),  # past the end: the last page
        (250, 0, 100, 1, 3, 0),  # before the start: the first
        (100, 2, 100, 1, 1, 0),  # exactly one page
        (0, 1, 100, 1, 1, None),  # an empty worklist: one empty page
    ],
)
def test_a_worklist_page(studies, asked, rows, number, pages, first) -> None:
    worklist = pd.DataFrame({"study_uid": [f"1.{i}" for i in range(studies)]})
    page = worklist_page(worklist, asked, rows)
    assert (page.number, page.pages) == (number, pages)
    if first is None:
        assert page.rows.empty
    else:
        assert list(page.rows["study_uid"]) == [f"1.{i}" for i in range(first, min(first + rows, studies))]
        assert list(page.rows.index) == list(range(len(page.rows)))
