"""Report words: token scores merged to words, and negation scopes (which words a report denies).

* :func:`report_words`: the words of the text the model read (``\\w`` runs joined by ``-``, ``'`` or a
  decimal point: ``x-ray``, ``3.5``), each with its character span and the model tokens inside it.
  Word pieces (``eff ##usion``) join their word; special tokens (``[CLS]``, span ``(0, 0)``) and
  punctuation belong to no word, so they can never be shown as evidence. Words cut off by the
  model's token limit have no tokens and are left out.
* :func:`negation_scopes`: NegEx-style (Chapman et al. 2001) scopes: a pre-negation trigger (``no``,
  ``without``, ``negative for``, ``free of``, ...) negates the words after it up to the end of the
  clause (``.``, ``;``, ``:``, a line break, or ``but``/``however``/``although``/``except``); a
  post-negation trigger (``is not seen``, ``has resolved``, ``ruled out``) negates its clause up to it.
  "No pleural effusion" then reads as evidence *against* effusion.
* :func:`word_scores`: ``(L, T)`` token scores summed per word -> ``(L, W)``, signed by the negation
  scope (``-`` inside one), each row scaled to max ``|s| = 1``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: A word: runs of word characters joined by one ``-``, ``'`` or a decimal point between digits.
WORD = re.compile(r"\w+(?:(?:[-']|(?<=\d)\.(?=\d))\w+)*")

#: Pre-negation triggers (lower case, matched on word boundaries); longest first.
PRE_NEGATION = (
    "without evidence of",
    "no evidence of",
    "no signs of",
    "no sign of",
    "negative for",
    "absence of",
    "free of",
    "without",
    "never",
    "none",
    "not",
    "no",
)
#: Post-negation triggers: they negate their clause up to themselves.
POST_NEGATION = (
    "is not seen",
    "are not seen",
    "not identified",
    "is absent",
    "are absent",
    "has resolved",
    "have resolved",
    "ruled out",
)
#: What ends a negation scope: clause punctuation, a line break, or a contrasting conjunction.
TERMINATOR = re.compile(r"[.;:!?\n]|\b(?:but|however|although|though|except|apart from|aside from)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Word:
    """One word of the report the model read.

    Attributes:
        text: The word as written.
        span: ``(start, end)`` character offsets in the report text.
        tokens: Indices of the model tokens inside it (word pieces), ascending, at least one.
        negated: Whether it lies in a negation scope (:func:`negation_scopes`).
    """

    text: str
    span: tuple[int, int]
    tokens: tuple[int, ...]
    negated: bool = False


def _phrase(trigger: str) -> re.Pattern[str]:
    return re.compile(r"\b" + r"\s+".join(map(re.escape, trigger.split())) + r"\b", re.IGNORECASE)


_PRE = [_phrase(t) for t in PRE_NEGATION]
_POST = [_phrase(t) for t in POST_NEGATION]


def negation_scopes(text: str) -> list[tuple[int, int]]:
    """Character ranges of ``text`` that a negation trigger denies (the trigger itself excluded).

    Returns:
        Sorted, non-overlapping ``(start, end)`` ranges.
    """
    ranges: list[tuple[int, int]] = []
    taken: list[tuple[int, int]] = []  # trigger spans already used (post triggers, then longer ones win)
    for pattern in _POST:
        for m in pattern.finditer(text):
            starts = [t.end() for t in TERMINATOR.finditer(text, 0, m.start())]
            ranges.append((starts[-1] if starts else 0, m.start()))
            taken.append(m.span())
    for pattern in _PRE:
        for m in pattern.finditer(text):
            if any(a < m.end() and m.start() < b for a, b in taken):
                continue
            taken.append(m.span())
            stop = TERMINATOR.search(text, m.end())
            ranges.append((m.end(), stop.start() if stop else len(text)))
    cleaned = sorted((a, b) for a, b in ranges if b > a)
    merged: list[tuple[int, int]] = []
    for a, b in cleaned:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    # a trigger inside another's scope ("no X and no Y") is not itself evidence: cut the triggers out
    out: list[tuple[int, int]] = []
    for a, b in merged:
        cuts = sorted((s, e) for s, e in taken if a < e and s < b)
        for s, e in cuts:
            if s > a:
                out.append((a, s))
            a = max(a, e)
        if b > a:
            out.append((a, b))
    return out


def report_words(text: str, spans: Sequence[tuple[int, int]]) -> list[Word]:
    """The words of ``text`` that the model saw, with their tokens and negation.

    Args:
        text: The report text the model read.
        spans: (T,) character span of each model token; ``(0, 0)`` for special tokens.

    Returns:
        The words in reading order; punctuation and special tokens belong to none.
    """
    scopes = negation_scopes(text)
    words = []
    real = [(t, a, b) for t, (a, b) in enumerate(spans) if b > a]
    for m in WORD.finditer(text):
        a, b = m.span()
        tokens = tuple(t for t, ta, tb in real if ta < b and a < tb)
        if tokens:
            negated = any(s <= a and b <= e for s, e in scopes)
            words.append(Word(m.group(), (a, b), tokens, negated))
    return words


def scale_rows(scores: np.ndarray) -> np.ndarray:
    """(L, W) signed scores with each row divided by its largest magnitude (an all-zero row stays 0)."""
    scores = np.asarray(scores, dtype=np.float32)
    peak = np.abs(scores).max(axis=1, keepdims=True) if scores.size else np.zeros((len(scores), 1), np.float32)
    return np.where(peak > 0, scores / np.maximum(peak, 1e-12), 0.0).astype(np.float32)


def word_scores(token_scores: np.ndarray, words: Sequence[Word], *, signed_by_negation: bool = True) -> np.ndarray:
    """Token scores summed over each word's pieces, negated inside a negation scope.

    Args:
        token_scores: (L, T) scores ``>= 0`` (attention rollout, integrated gradients).
        words: The report's words (:func:`report_words`).
        signed_by_negation: Give negated words a negative sign (evidence against the label).

    Returns:
        (L, W) float32, each row scaled to max ``|s| = 1``.
    """
    scores = np.asarray(token_scores, dtype=np.float32)
    out = np.zeros((scores.shape[0], len(words)), np.float32)
    for w, word in enumerate(words):
        sign = -1.0 if signed_by_negation and word.negated else 1.0
        out[:, w] = sign * scores[:, list(word.tokens)].sum(1)
    return scale_rows(out)


def top_words(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` words with the largest (signed) score, best first (ties: reading order)."""
    return np.argsort(-np.asarray(scores), kind="stable")[:k]
