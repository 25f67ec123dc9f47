"""The worklist: scored studies (``medfusion.scoring.read_results``) joined with their review state.

One row per study, with columns:

- ``study_uid``, ``model_name``, ``model_version``, ``scored_at``;
- ``prob_<label>``, ``threshold_<label>`` per label (from the scoring output);
- ``positives``: labels at or above threshold (comma-separated), ``n_positive``;
- ``top_label``, ``top_prob``: the label the ranking looks at and its probability (the filtered
  label when a label filter is set, else the label with the largest ``prob - threshold``);
- ``margin``: ``|prob - threshold|`` of ``top_label`` for a label filter, else the smallest margin
  over labels (how close the study is to flipping a decision);
- ``reviewed``: ``"n/L"`` labels with a current decision; ``state``: ``unreviewed`` | ``partial`` |
  ``reviewed``.

Sort orders (:data:`SORTS`): ``priority`` (most suspicious first: positives, then the largest
``prob - threshold``), ``uncertain`` (closest to a threshold first), ``probability`` (highest
``top_prob`` first), ``study`` (by UID).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from medfusion.results import decide, labels_of

ReviewState = Literal["unreviewed", "partial", "reviewed"]
STATES: tuple[str, ...] = ("unreviewed", "partial", "reviewed")
SORTS: tuple[str, ...] = ("priority", "uncertain", "probability", "study")


@dataclass(frozen=True)
class WorklistQuery:
    """Filter and sort settings.

    Attributes:
        label: Only look at this label (its probability filters and ranks), or None for all.
        prob_min: Keep studies whose ``top_prob`` is at least this.
        prob_max: ... and at most this.
        states: Review states to keep (empty = all).
        positive_only: Keep only studies with at least one label at or above threshold (of
            ``label`` when set).
        sort: One of :data:`SORTS`.
    """

    label: str | None = None
    prob_min: float = 0.0
    prob_max: float = 1.0
    states: tuple[str, ...] = ()
    positive_only: bool = False
    sort: str = "priority"


def build_worklist(results: pd.DataFrame, reviewed: pd.Series, query: WorklistQuery = WorklistQuery()) -> pd.DataFrame:
    """Join scores with review state, filter and sort.

    Args:
        results: The scoring output (one row per study; ``prob_*``/``threshold_*`` columns).
        reviewed: Per study, how many of the output's labels have a current decision (indexed by
            ``study_uid``; :meth:`medfusion.review.store.ReviewStore.reviewed_counts`).
        query: Filters and sort order.

    Returns:
        The worklist (columns in the module docstring), sorted, index reset.
    """
    labels = labels_of(results)
    if query.label is not None and query.label not in labels:
        raise ValueError(f"unknown label {query.label!r}; the scoring output has {', '.join(labels)}")
    if query.sort not in SORTS:
        raise ValueError(f"unknown sort {query.sort!r}; use one of {', '.join(SORTS)}")
    probs = results[[f"prob_{lab}" for lab in labels]].to_numpy(dtype=float)  # (S, L)
    thresholds = results[[f"threshold_{lab}" for lab in labels]].to_numpy(dtype=float)  # (S, L)
    excess = probs - thresholds  # (S, L), how far above (> 0) or below (< 0) its threshold
    positive = decide(probs, thresholds)  # (S, L) bool

    table = results[["study_uid"] + [c for c in ("model_name", "model_version", "scored_at") if c in results]].copy()
    for i, label in enumerate(labels):
        table[f"prob_{label}"] = probs[:, i]
        table[f"threshold_{label}"] = thresholds[:, i]
    table["positives"] = _positive_names(positive, labels)
    table["n_positive"] = positive.sum(1)
    if query.label is None:
        focus = np.nanargmax(np.where(np.isnan(excess), -np.inf, excess), axis=1) if len(labels) else np.zeros(0, int)
        table["margin"] = np.nanmin(np.abs(excess), axis=1) if len(table) else []
    else:
        focus = np.full(len(table), labels.index(query.label))
        table["margin"] = np.abs(excess[np.arange(len(table)), focus])
    rows = np.arange(len(table))
    table["top_label"] = np.asarray(labels, dtype=object)[focus] if len(labels) else []
    table["top_prob"] = probs[rows, focus]
    table["_excess"] = excess[rows, focus]
    focus_positive = positive[rows, focus] if query.label is not None else positive.any(axis=1)  # (S,)
    table["_positive"] = np.asarray(focus_positive, dtype=bool)

    done = table["study_uid"].map(reviewed).fillna(0).astype(int)
    table["reviewed"] = np.asarray([f"{d}/{len(labels)}" for d in range(len(labels) + 1)], dtype=object)[
        np.clip(done.to_numpy(), 0, len(labels))
    ]
    table["state"] = np.where(done == 0, "unreviewed", np.where(done >= len(labels), "reviewed", "partial"))

    keep = (table["top_prob"] >= query.prob_min) & (table["top_prob"] <= query.prob_max)
    if query.states:
        keep &= table["state"].isin(query.states)
    if query.positive_only:
        keep &= table["_positive"]
    table = table[keep]

    if query.sort == "priority":
        table = table.sort_values(["_positive", "_excess", "study_uid"], ascending=[False, False, True])
    elif query.sort == "uncertain":
        table = table.sort_values(["margin", "study_uid"])
    elif query.sort == "probability":
        table = table.sort_values(["top_prob", "study_uid"], ascending=[False, True])
    else:
        table = table.sort_values("study_uid")
    return table.drop(columns=["_excess", "_positive"]).reset_index(drop=True)


def _positive_names(positive: np.ndarray, labels: list[str]) -> np.ndarray:
    """Per study, its positive labels joined by ``", "``, in label order.

    Args:
        positive: (S, L) bool.
        labels: L names.

    Returns:
        (S,) strings. Built once per distinct pattern of positives (few), not once per study, so a
        worklist of tens of thousands of studies stays cheap to rebuild on every click.
    """
    if positive.size == 0:
        return np.full(len(positive), "", dtype=object)
    packed = np.ascontiguousarray(np.packbits(positive.astype(bool), axis=1))  # (S, ceil(L / 8)) bytes
    keys = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()  # one comparable key per study
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    names = np.asarray(
        [", ".join(lab for lab, p in zip(labels, positive[i], strict=True) if p) for i in first], dtype=object
    )
    return names[np.ravel(inverse)]


#: Worklist rows on one page: what every click sends to the browser (and, for users who may see
#: identifiers, the headers read), whatever the size of the scoring output.
PAGE_ROWS = 100


@dataclass(frozen=True)
class WorklistPage:
    """One page of a worklist.

    Attributes:
        rows: The page's rows (index reset).
        number: The page shown, 1-based (the one asked for, clamped to ``1..pages``).
        pages: How many pages the worklist has (at least 1).
    """

    rows: pd.DataFrame
    number: int
    pages: int


def worklist_page(worklist: pd.DataFrame, number: int, rows: int | None = None) -> WorklistPage:
    """Page ``number`` (1-based, clamped) of ``worklist``, ``rows`` (default :data:`PAGE_ROWS`) a page."""
    size = max(int(rows if rows is not None else PAGE_ROWS), 1)
    pages = max(-(-len(worklist) // size), 1)
    number = min(max(int(number), 1), pages)
    start = (number - 1) * size
    return WorklistPage(worklist.iloc[start : start + size].reset_index(drop=True), number, pages)
