"""Deletion curves of word evidence: does deleting a method's top words move the label's logit?

For a study and a label the model calls positive, a method ranks the report's words by its signed
word score (:attr:`StudyExplanation.word_scores <medfusion.explain.explanation.StudyExplanation>`);
the words are deleted cumulatively, top first (their tokens removed from the model input, later tokens
moving up: :func:`medfusion.explain.text.delete_tokens`), and the curve records the logit drop
``logit(report) - logit(report without the top k words)`` for ``k = 1..K``. The **AOPC** (area over
the perturbation curve, Samek et al. 2017) is the curve's mean over ``k = 1..K``.

Two baselines, each the mean over :data:`DRAWS` seeded draws:

* **random**: words deleted in a random order;
* **frequency-matched**: each of the method's top-k words replaced by another word of the same report
  with the nearest corpus frequency (log document frequency over the evaluated reports; ties at
  random; never one of the method's own top-K words). A method that merely ranks stop-words ("of",
  "no", "is") high deletes words with the same frequency profile as this baseline does, so it cannot
  beat it by frequency alone.

``K = min(max_k, W // 2)`` for a report of ``W`` words, so the baseline always has words to choose.
A method **passes** when its AOPC beats both baselines with the 95% bootstrap interval of the paired
mean difference above 0 (:func:`verdicts`).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medfusion.errors import InputRejected
from medfusion.explain.explanation import TOKEN_METHODS, explain_study
from medfusion.explain.text import deletion_logits
from medfusion.explain.words import WORD, Word
from medfusion.explain.workspace import exclusive
from medfusion.inference import Predictor, StudyInput

log = logging.getLogger(__name__)

#: Random and frequency-matched draws per (study, label).
DRAWS = 8
#: Bootstrap resamples of the paired differences.
BOOTSTRAP = 2000


def aopc(curve: Sequence[float] | np.ndarray) -> float:
    """Area over the perturbation curve: the mean logit drop over ``k = 1..K`` (0 for an empty curve)."""
    values = np.asarray(curve, dtype=np.float64)
    return float(values.mean()) if values.size else 0.0


def document_frequency(reports: Iterable[str]) -> Counter[str]:
    """Number of reports each lower-cased word (:data:`medfusion.explain.words.WORD`) occurs in."""
    df: Counter[str] = Counter()
    for text in reports:
        df.update({m.group().lower() for m in WORD.finditer(text)})
    return df


def frequency_matched(
    order: Sequence[int], words: Sequence[Word], df: Counter[str], k: int, rng: np.random.Generator
) -> list[int]:
    """For each of ``order[:k]``, another word of the report with the nearest log document frequency.

    Args:
        order: A method's word ranking (best first).
        words: The report's words.
        df: Corpus document frequencies (:func:`document_frequency`).
        k: Words to match.
        rng: Tie-breaking.

    Returns:
        ``k`` distinct word indices, none of them in ``order[:k]``.
    """
    logf = np.array([math.log(1 + df.get(w.text.lower(), 0)) for w in words])
    free = np.ones(len(words), bool)
    free[list(order[:k])] = False
    chosen = []
    for w in order[:k]:
        candidates = np.flatnonzero(free)
        gap = np.abs(logf[candidates] - logf[w])
        best = candidates[gap <= gap.min() + 1e-9]
        pick = int(rng.choice(best))
        chosen.append(pick)
        free[pick] = False
    return chosen


@dataclass(frozen=True)
class Curves:
    """One (study, label)'s deletion curves.

    Attributes:
        label: Label name.
        k: K (the curve length).
        methods: Method -> (K,) logit drops.
        random: (K,) mean over the random draws.
        matched: Method -> (K,) mean over its frequency-matched draws.
    """

    label: str
    k: int
    methods: dict[str, np.ndarray]
    random: np.ndarray
    matched: dict[str, np.ndarray]


def _drops(words: Sequence[Word], sequence: Sequence[int], k: int, n_tokens: int) -> torch.Tensor:
    """(k, T) bool: row ``j`` deletes the tokens of ``sequence[: j + 1]``."""
    rows = torch.zeros(k, n_tokens, dtype=torch.bool)
    for j, w in enumerate(sequence[:k]):
        rows[j:, list(words[w].tokens)] = True  # deleted from row j on
    return rows


def study_curves(
    predictor: Predictor,
    study: StudyInput,
    df: Counter[str],
    *,
    methods: Sequence[str] = TOKEN_METHODS,
    max_k: int = 10,
    draws: int = DRAWS,
    seed: int = 0,
    labels: Sequence[str] | None = None,
) -> list[Curves]:
    """Deletion curves of every label the model calls positive (or of ``labels``) for one study.

    Args:
        predictor: The model.
        study: The study (its report is what is perturbed; the image stays).
        df: Corpus document frequencies.
        methods: Word-evidence methods compared.
        max_k: Longest curve.
        draws: Random and frequency-matched draws.
        seed: Seed of the draws.
        labels: Labels to evaluate (default: those called positive).

    Returns:
        One :class:`Curves` per label (none when the report has fewer than 2 words).
    """
    ex = explain_study(predictor, study, methods)
    words = ex.words
    k = min(max_k, len(words) // 2)
    if k < 1 or not ex.word_scores:
        return []
    if labels is None:
        labels = [lab for lab, p, t in zip(ex.labels, ex.probabilities, ex.thresholds, strict=True) if p >= t]
    sample = predictor.preprocess(study)
    rng = np.random.default_rng(seed)
    out = []
    with exclusive(predictor.loaded.model) as ws:
        batch = {key: v.to(predictor.loaded.device) for key, v in predictor.collate([sample]).items()}
        n_tokens = int(batch["input_ids"].shape[1])
        for label in labels:
            i = ex.labels.index(label)
            plans: list[tuple[str, list[int]]] = []
            for method, scores in ex.word_scores.items():
                order = [int(w) for w in np.argsort(-scores[i], kind="stable")]
                plans.append((method, order[:k]))
                plans += [(f"matched:{method}", frequency_matched(order, words, df, k, rng)) for _ in range(draws)]
            plans += [("random", [int(w) for w in rng.permutation(len(words))[:k]]) for _ in range(draws)]
            nothing = torch.zeros(1, n_tokens, dtype=torch.bool)
            drops = torch.cat([nothing] + [_drops(words, s, k, n_tokens) for _, s in plans])
            logits = deletion_logits(ws.model.eval(), batch, drops)[:, i]  # (1 + P * k,)
            curves = (logits[0] - logits[1:]).numpy().reshape(len(plans), k)
            grouped: dict[str, list[np.ndarray]] = {}
            for (name, _), curve in zip(plans, curves, strict=True):
                grouped.setdefault(name, []).append(curve)
            out.append(
                Curves(
                    label,
                    k,
                    {m: grouped[m][0] for m in ex.word_scores},
                    np.mean(grouped["random"], axis=0),
                    {m: np.mean(grouped[f"matched:{m}"], axis=0) for m in ex.word_scores},
                )
            )
    return out


@dataclass(frozen=True)
class AopcRow:
    """One method's AOPC over the evaluated (study, label) pairs, with its baselines.

    Attributes:
        method: Word-evidence method.
        n: (study, label) pairs.
        aopc: Mean AOPC of the method.
        random: Mean AOPC of the random baseline.
        matched: Mean AOPC of the frequency-matched baseline.
        vs_random: 95% bootstrap interval ``(low, high)`` of the mean paired difference to random.
        vs_matched: The same against the frequency-matched baseline.
    """

    method: str
    n: int
    aopc: float
    random: float
    matched: float
    vs_random: tuple[float, float]
    vs_matched: tuple[float, float]

    @property
    def passed(self) -> bool:
        """Beats both baselines: both intervals lie above 0."""
        return self.vs_random[0] > 0 and self.vs_matched[0] > 0


def bootstrap_interval(diffs: np.ndarray, seed: int = 0, resamples: int = BOOTSTRAP) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of ``diffs`` (``(0, 0)`` when empty)."""
    diffs = np.asarray(diffs, dtype=np.float64)
    if not diffs.size:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, diffs.size, (resamples, diffs.size))].mean(1)
    return (float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975)))


def summarize(curves: Sequence[Curves]) -> list[AopcRow]:
    """Per method: mean AOPCs and the paired bootstrap intervals against both baselines."""
    methods = list(dict.fromkeys(m for c in curves for m in c.methods))
    rows = []
    for method in methods:
        mine = [c for c in curves if method in c.methods]
        own = np.array([aopc(c.methods[method]) for c in mine])
        rand = np.array([aopc(c.random) for c in mine])
        matched = np.array([aopc(c.matched[method]) for c in mine])
        rows.append(
            AopcRow(
                method,
                len(mine),
                float(own.mean()),
                float(rand.mean()),
                float(matched.mean()),
                bootstrap_interval(own - rand),
                bootstrap_interval(own - matched),
            )
        )
    return rows


def evaluate_aopc(
    predictor: Predictor,
    studies: Sequence[StudyInput],
    *,
    methods: Sequence[str] = TOKEN_METHODS,
    max_k: int = 10,
    draws: int = DRAWS,
    progress: bool = False,
) -> tuple[list[AopcRow], list[Curves]]:
    """Deletion curves and AOPC of each word-evidence method over ``studies`` (reports required).

    The corpus frequencies of the frequency-matched baseline come from the studies' reports.

    Returns:
        The per-method rows and every (study, label) curve.
    """
    df = document_frequency(s.report_text or "" for s in studies)
    iterator: Iterable[tuple[int, StudyInput]] = enumerate(studies)
    if progress:
        from rich.progress import track

        iterator = track(list(iterator), description="deletion curves")
    curves: list[Curves] = []
    for n, study in iterator:
        if not (study.report_text or "").strip():
            continue
        try:
            curves += study_curves(predictor, study, df, methods=methods, max_k=max_k, draws=draws, seed=n)
        except InputRejected as exc:
            log.warning("study skipped: %s", exc.reason)
    return summarize(curves), curves


def format_aopc_table(rows: Sequence[AopcRow]) -> str:
    """A Markdown table of the rows."""
    lines = [
        "| method | n | AOPC | random | freq-matched | Δ random (95% CI) | Δ freq-matched (95% CI) | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.method} | {r.n} | {r.aopc:.3f} | {r.random:.3f} | {r.matched:.3f} "
            f"| {r.aopc - r.random:+.3f} ({r.vs_random[0]:+.3f}, {r.vs_random[1]:+.3f}) "
            f"| {r.aopc - r.matched:+.3f} ({r.vs_matched[0]:+.3f}, {r.vs_matched[1]:+.3f}) "
            f"| {'pass' if r.passed else 'FAIL'} |"
        )
    return "\n".join(lines)


def aopc_verdicts(rows: Sequence[AopcRow], cohort: str) -> dict[str, dict[str, Any]]:
    """Per method, the verdict record :mod:`medfusion.explain.checks` stores."""
    return {
        r.method: {
            "check": "aopc",
            "passed": r.passed,
            "cohort": cohort,
            "detail": f"AOPC {r.aopc:.3f} vs random {r.random:.3f}, frequency-matched {r.matched:.3f} (n={r.n})",
        }
        for r in rows
    }
