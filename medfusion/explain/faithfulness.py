"""Faithfulness of explanations on the demo cohort, whose lesion masks and evidence spans are known.

* **Pointing game** (image heatmaps): for each study whose label is positive and has a lesion mask
  (``masks/<study_uid>.npz``: ``nodule``, ``cardiomegaly``, ``pneumonia``), the heatmap of that label is
  upsampled (bilinear) to the mask's grid and its peak taken (ties: the tied pixel nearest their
  centroid); a hit when the peak lies within :data:`TOLERANCE` (15 px at 224 px, as in Zhang et al.'s
  pointing game) of the mask, i.e. inside the mask dilated by that radius. A flat heatmap (e.g. cross-attention over a
  1x1 image grid) has no peak and counts as a miss. Random baseline: a uniformly random point hits
  with probability equal to the dilated mask's area fraction; the baseline is its exact mean over the studies.
* **Top-k token hit rate** (token scores): for each study whose label is positive and whose report
  has evidence spans asserting it (``evidence.json``: assertion ``positive`` or ``uncertain``), a hit
  when one of the ``k`` highest-scoring tokens lies inside an evidence span. Random baseline: ``k``
  tokens drawn without replacement from the report's ``n`` real tokens, ``m`` of them inside a span,
  hit with probability ``1 - C(n - m, k) / C(n, k)`` (exact, not sampled); again averaged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from math import comb
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medfusion.errors import InputRejected
from medfusion.explain.explanation import IMAGE_METHODS, TOKEN_METHODS, explain_study
from medfusion.inference import Predictor, StudyInput

log = logging.getLogger(__name__)

#: Pointing-game tolerance as a fraction of the mask grid's longer side: Zhang et al.'s 15 px at 224 px.
TOLERANCE = 15 / 224

#: Evidence assertions that support a positive label.
SUPPORTING = ("positive", "uncertain")


@dataclass(frozen=True)
class FaithfulnessRow:
    """One method x label result.

    Attributes:
        method: Explanation method (``gradcam``, ``cross_attention``, ``gradient``, ``attention``).
        metric: ``pointing_game`` or ``top<k>_token_hit``.
        label: Label name.
        n: Studies evaluated.
        hit_rate: Fraction of hits.
        baseline: Expected hit rate of the random baseline (exact).
    """

    method: str
    metric: str
    label: str
    n: int
    hit_rate: float
    baseline: float

    @property
    def lift(self) -> float:
        """``hit_rate - baseline``."""
        return self.hit_rate - self.baseline


def heatmap_peak(heatmap: np.ndarray, shape: tuple[int, int]) -> tuple[int, int]:
    """Peak ``(row, col)`` of a (H, W) heatmap upsampled bilinearly to ``shape`` (ties: nearest their centroid)."""
    up = F.interpolate(
        torch.as_tensor(heatmap, dtype=torch.float32)[None, None], size=shape, mode="bilinear", align_corners=False
    )
    grid = up[0, 0].numpy()  # (H, W) at ``shape``
    tied = np.argwhere(grid >= grid.max() - 1e-6)  # (K, 2)
    centre = tied.mean(0)
    r, c = tied[np.argmin(((tied - centre) ** 2).sum(1))]
    return int(r), int(c)


def tolerance_px(shape: tuple[int, ...]) -> int:
    """Pointing-game tolerance in pixels of a mask grid: :data:`TOLERANCE` of its longer side."""
    return round(TOLERANCE * max(shape))


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """(h, w) bool mask grown by a disk of ``radius`` pixels."""
    if radius <= 0:
        return mask.astype(bool)
    r = torch.arange(-radius, radius + 1, dtype=torch.float32)
    disk = ((r[:, None] ** 2 + r[None, :] ** 2) <= radius**2).float()[None, None]  # (1, 1, k, k)
    grown = F.conv2d(torch.as_tensor(mask, dtype=torch.float32)[None, None], disk, padding=radius)
    return (grown[0, 0] > 0.5).numpy()


def pointing_hit(heatmap: np.ndarray, region: np.ndarray) -> bool:
    """Whether the heatmap's peak lies inside the (h, w) bool ``region`` (the dilated mask); a flat
    heatmap points nowhere (a miss)."""
    if float(heatmap.max() - heatmap.min()) < 1e-6:
        return False
    return bool(region[heatmap_peak(heatmap, region.shape)])


def random_topk_hit(n_tokens: int, n_inside: int, k: int) -> float:
    """Probability that ``k`` of ``n_tokens`` tokens drawn without replacement include one of ``n_inside``."""
    k = min(k, n_tokens)
    if n_tokens == 0 or n_inside == 0:
        return 0.0
    return 1.0 - comb(n_tokens - n_inside, k) / comb(n_tokens, k)


def tokens_inside(spans: Sequence[tuple[int, int]], evidence: Iterable[tuple[int, int]]) -> np.ndarray:
    """(T,) bool: real tokens (non-empty span) lying within one of the ``evidence`` character ranges."""
    ranges = list(evidence)
    return np.array([b > a and any(s <= a and b <= e for s, e in ranges) for a, b in spans], dtype=bool)


def topk_hit(scores: np.ndarray, inside: np.ndarray, real: np.ndarray, k: int) -> bool:
    """Whether one of the ``k`` best-scoring real tokens is ``inside`` an evidence span (ties: first tokens)."""
    candidates = np.flatnonzero(real)
    best = candidates[np.argsort(-scores[candidates], kind="stable")[:k]]
    return bool(inside[best].any())


def locate_spans(model_text: str, report: str, spans: Iterable[dict[str, Any]]) -> list[tuple[int, int]]:
    """Evidence spans (offsets in the full ``report``) mapped into the text the model read.

    Each span's text is searched in ``model_text`` (the model may read a section selection); the
    occurrence nearest the span's own offset is used; spans not found there are dropped.
    """
    shift = report.find(model_text[:40]) if model_text else -1
    located = []
    for span in spans:
        text, hits, at = span["text"], [], model_text.find(span["text"])
        while at >= 0:
            hits.append(at)
            at = model_text.find(text, at + 1)
        if hits:
            start = min(hits, key=lambda h: abs(h + max(shift, 0) - span["start"]))
            located.append((start, start + len(text)))
    return located


def load_mask(path: str | Path, label: str) -> np.ndarray | None:
    """The (h, w) bool mask of ``label`` in a demo ``masks/<study_uid>.npz``, or None when absent or empty."""
    if not path:
        return None
    with np.load(path) as arrays:
        if label not in arrays.files:
            return None
        mask = arrays[label].astype(bool)
    return mask if mask.any() else None


def evaluate(
    predictor: Predictor,
    records: Sequence[dict[str, Any]],
    evidence: dict[str, Any],
    *,
    methods: Sequence[str] = IMAGE_METHODS + TOKEN_METHODS,
    ks: Sequence[int] = (1, 5),
    progress: bool = False,
) -> list[FaithfulnessRow]:
    """Pointing game and top-k token hit rate of each method and label over ``records``.

    Args:
        predictor: The model.
        records: Demo-cohort records (``meta`` with ``study_uid`` and ``lesion_mask_path``).
        evidence: The cohort's ``evidence.json`` (study UID -> ``{"spans": [...]}``).
        methods: Methods to evaluate (those that do not apply to the model are skipped).
        ks: Tokens per study for the top-k hit rate (one row per k).
        progress: Show a rich progress bar.

    Returns:
        One row per (method, label) with at least one eligible study; image methods first.
    """
    labels = predictor.labels
    hits: dict[tuple[str, str, str], list[tuple[bool, float]]] = {}  # (method, metric, label) -> (hit, baseline)
    iterator: Iterable[dict[str, Any]] = records
    if progress:
        from rich.progress import track

        iterator = track(records, description="faithfulness")
    for record in iterator:
        positives = [lab for lab, y in zip(labels, record["label"], strict=True) if y == 1]
        if not positives:
            continue
        meta = record["meta"]
        try:
            ex = explain_study(
                predictor, StudyInput(image_paths=record["image"], report_text=record["report"]), methods
            )
        except InputRejected as exc:
            log.warning("study skipped: %s", exc.reason)
            continue
        for label in positives:
            i = labels.index(label)
            mask = load_mask(meta.get("lesion_mask_path", ""), label) if ex.image is not None else None
            if mask is not None:
                region = dilate(mask, tolerance_px(mask.shape))
                baseline = float(region.mean())
                for method, maps in ex.heatmaps.items():
                    hits.setdefault((method, "pointing_game", label), []).append(
                        (pointing_hit(maps[i], region), baseline)
                    )
            spans = [
                s
                for s in evidence.get(meta["study_uid"], {}).get("spans", [])
                if s["label"] == label and s["assertion"] in SUPPORTING
            ]
            if spans and ex.token_scores:
                inside = tokens_inside(ex.token_spans, locate_spans(ex.report_text, record["report"], spans))
                real = np.array([b > a for a, b in ex.token_spans])
                for k in ks if inside.any() else ():
                    baseline = random_topk_hit(int(real.sum()), int(inside.sum()), k)
                    for method, scores in ex.token_scores.items():
                        hits.setdefault((method, f"top{k}_token_hit", label), []).append(
                            (topk_hit(scores[i], inside, real, k), baseline)
                        )
    rows = []
    order = {m: n for n, m in enumerate(IMAGE_METHODS + TOKEN_METHODS)}
    for (method, metric, label), values in sorted(
        hits.items(), key=lambda kv: (order[kv[0][0]], kv[0][1], labels.index(kv[0][2]))
    ):
        rows.append(
            FaithfulnessRow(
                method,
                metric,
                label,
                len(values),
                float(np.mean([h for h, _ in values])),
                float(np.mean([b for _, b in values])),
            )
        )
    return rows


def pooled(rows: Sequence[FaithfulnessRow], method: str, metric: str) -> FaithfulnessRow:
    """One method and metric pooled over labels (study-weighted), label ``"all"``."""
    mine = [r for r in rows if r.method == method and r.metric == metric]
    n = sum(r.n for r in mine)
    hit = sum(r.hit_rate * r.n for r in mine) / max(n, 1)
    base = sum(r.baseline * r.n for r in mine) / max(n, 1)
    return FaithfulnessRow(method, metric, "all", n, hit, base)


def load_evidence(cohort_dir: str | Path) -> dict[str, Any]:
    """A demo cohort's ``evidence.json``."""
    return json.loads((Path(cohort_dir) / "evidence.json").read_text(encoding="utf-8"))


def format_table(rows: Sequence[FaithfulnessRow]) -> str:
    """A Markdown table of the rows, with per-method pooled rows."""
    lines = [
        "| method | metric | label | n | hit rate | random baseline | lift |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for method, metric in dict.fromkeys((r.method, r.metric) for r in rows):
        for r in [r for r in rows if (r.method, r.metric) == (method, metric)] + [pooled(rows, method, metric)]:
            lines.append(
                f"| {r.method} | {r.metric} | {r.label} | {r.n} | {r.hit_rate:.3f} | {r.baseline:.3f} | {r.lift:+.3f} |"
            )
    return "\n".join(lines)
