"""Report-text leakage probe: how much of a text AUROC the label's own words carry.

A report that names its finding ("Small left pleural effusion.") makes the label nearly readable from
the text: the text model's AUROC then measures reading, not diagnosis (Transchex's lesson). Two probes,
per label:

* **label words alone**: a logistic regression on the counts of the label's own terms
  (:func:`label_terms`: its name and a few common synonyms), fitted on the training reports and scored
  on the test reports. High: the words alone give the label away (negated mentions count too).
* **text model on scrubbed reports**: the trained text model scoring test reports with every label's
  terms removed (:func:`scrub`). What is left is what the model read around the label words.

Both are reported next to the text model's plain test AUROC by ``benchmarks/ablation.py``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

#: Common synonyms of chest findings (lower case); a label's own name is always a term.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "atelectasis": ("atelectatic",),
    "cardiomegaly": ("enlarged heart", "cardiac enlargement", "enlarged cardiac silhouette"),
    "consolidation": ("consolidative", "airspace opacity"),
    "edema": ("oedema", "vascular congestion"),
    "effusion": ("pleural fluid",),
    "fracture": ("fractured", "fractures"),
    "mass": ("masses",),
    "nodule": ("nodules", "nodular"),
    "pneumonia": ("consolidation", "infiltrate", "infection"),
    "pneumothorax": ("pneumothoraces",),
}


def label_terms(label: str) -> tuple[str, ...]:
    """The label's own words: its name (``_``/``-`` as spaces) and :data:`SYNONYMS`, lower case."""
    name = re.sub(r"[_\-]+", " ", label).strip().lower()
    return (name, *SYNONYMS.get(name, ()))


def _pattern(terms: Sequence[str]) -> re.Pattern[str]:
    words = sorted({t.lower() for t in terms}, key=len, reverse=True)  # longest first
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")s?\b", re.IGNORECASE)


def scrub(text: str, labels: Sequence[str]) -> str:
    """``text`` without any of the labels' terms (whole words, an optional plural ``s``)."""
    terms = [t for label in labels for t in label_terms(label)]
    return re.sub(r"[ \t]{2,}", " ", _pattern(terms).sub("", text)) if terms else text


def term_counts(reports: Sequence[str], label: str) -> np.ndarray:
    """(N, T) how often each of ``label``'s :func:`label_terms` occurs in each report."""
    terms = label_terms(label)
    return np.array([[len(_pattern([t]).findall(r or "")) for t in terms] for r in reports], dtype=np.float64)


def label_word_auroc(
    train_reports: Sequence[str],
    train_targets: np.ndarray,
    test_reports: Sequence[str],
    test_targets: np.ndarray,
    labels: Sequence[str],
) -> dict[str, float]:
    """Per label, test AUROC of a logistic regression on the label's own term counts (NaN: not scorable).

    Args:
        train_reports: N training reports.
        train_targets: (N, L) 1/0, NaN unknown.
        test_reports: M test reports.
        test_targets: (M, L) 1/0, NaN unknown.
        labels: L names.

    Returns:
        Label -> AUROC; 0.5 where no training report uses the words or one class is missing in train.
    """
    out: dict[str, float] = {}
    for j, label in enumerate(labels):
        known_test = ~np.isnan(test_targets[:, j])
        y_test = test_targets[known_test, j]
        if not 0 < y_test.sum() < len(y_test):
            out[label] = float("nan")
            continue
        known = ~np.isnan(train_targets[:, j])
        x, y = term_counts([r for r, k in zip(train_reports, known, strict=True) if k], label), train_targets[known, j]
        x_test = term_counts([r for r, k in zip(test_reports, known_test, strict=True) if k], label)
        if not x.any() or not 0 < y.sum() < len(y):
            out[label] = 0.5  # nothing to learn from the words: a constant score
            continue
        model = LogisticRegression(C=1.0, max_iter=1000).fit(np.log1p(x), y)
        out[label] = float(roc_auc_score(y_test, model.predict_proba(np.log1p(x_test))[:, 1]))
    return out
