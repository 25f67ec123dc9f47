"""The review app's explanations: computed once per (model, study, methods), kept in a bounded cache.

Streamlit starts a new script run for every click without waiting for the previous one
(``runner.fastReruns``), and every session shares one model. :func:`explain_cached` makes that
safe and cheap: explanations run through :func:`medfusion.explain.explain_study` (thread-safe, one
pass at a time per model), finished ones are shared by every session through an
:class:`ExplanationCache`, and the caller's ``checkpoint`` abandons work for a study the reviewer
has already left (waiting or computing), so rapid navigation does not pile explanations up.

:func:`explain_lazily` is the viewer's entry: it computes only what the reviewer looks at (the
methods and labels asked for; the first call for a study only the forward pass and what it is
shown first) and merges each new part into the study's cached explanation, so every (study,
method, label) is computed once and shared by every session.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence

import numpy as np

from medfusion.explain import METHODS, StudyExplanation, explain_study
from medfusion.explain.workspace import Checkpoint, no_checkpoint
from medfusion.inference import Predictor, StudyInput

#: Default bounds of the shared cache: entries and bytes of arrays (a 224 px, 14-label study with
#: three heatmaps holds about 8 MB).
MAX_ENTRIES = 64
MAX_BYTES = 512 * 2**20


def explanation_nbytes(explanation: StudyExplanation) -> int:
    """Bytes held by an explanation's arrays (heatmaps, token scores, image, contributions)."""
    arrays = [
        *explanation.heatmaps.values(),
        *explanation.token_scores.values(),
        *explanation.modality_contributions.values(),
        explanation.probabilities,
        explanation.thresholds,
    ]
    if explanation.image is not None:
        arrays.append(explanation.image)
    return sum(int(np.asarray(a).nbytes) for a in arrays)


class ExplanationCache:
    """A thread-safe LRU of finished explanations, bounded by entry count and array bytes.

    Args:
        max_entries: Most explanations kept.
        max_bytes: Most array bytes kept (an explanation larger than this alone is not kept).
    """

    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[StudyExplanation, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def nbytes(self) -> int:
        """Array bytes held now."""
        with self._lock:
            return self._bytes

    def get(self, key: Hashable) -> StudyExplanation | None:
        """The explanation stored under ``key`` (now the most recently used), or None."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def merge(self, key: Hashable, part: StudyExplanation) -> StudyExplanation:
        """Merge ``part`` into the explanation stored under ``key`` (:func:`merged`), store and return it."""
        with self._lock:
            item = self._items.get(key)
        combined = merged(item[0], part) if item is not None else part
        self.put(key, combined)
        return combined

    def put(self, key: Hashable, explanation: StudyExplanation) -> None:
        """Store an explanation; the least recently used ones go until both bounds hold."""
        size = explanation_nbytes(explanation)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if size > self.max_bytes:
                return
            self._items[key] = (explanation, size)
            self._bytes += size
            while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
                _, (_, freed) = self._items.popitem(last=False)
                self._bytes -= freed


def explain_cached(
    cache: ExplanationCache,
    key: Hashable,
    predictor: Predictor,
    study: StudyInput,
    methods: Sequence[str] = METHODS,
    checkpoint: Checkpoint = no_checkpoint,
) -> StudyExplanation:
    """The cached explanation of ``key``, or a new one (then cached).

    Args:
        cache: The shared cache.
        key: Identifies model, study and methods (e.g. ``(model_uri, results_dir, study_uid)``).
        predictor: The shared model.
        study: The study's inputs.
        methods: Explanation methods.
        checkpoint: Passed to :func:`~medfusion.explain.explain_study`: raise from it to abandon an
            explanation nobody wants any more (nothing is cached then).
    """
    found = cache.get(key)
    if found is not None:
        return found

    def waiting_or_found(step: str, done: float) -> None:
        if step == "waiting" and (ready := cache.get(key)) is not None:
            raise _Ready(ready)  # another session finished this study while we waited for the model
        checkpoint(step, done)

    try:
        explanation = explain_study(predictor, study, methods, checkpoint=waiting_or_found)
    except _Ready as ready:
        return ready.explanation
    cache.put(key, explanation)
    return explanation


class _Ready(Exception):
    """Raised while waiting for the model once another thread has cached the explanation wanted."""

    def __init__(self, explanation: StudyExplanation) -> None:
        super().__init__("explanation ready")
        self.explanation = explanation


def covers(explanation: StudyExplanation, methods: Sequence[str], labels: Sequence[int]) -> bool:
    """Whether ``explanation`` holds ``labels`` (indices) of every method in ``methods`` that applies."""
    return all(
        m not in explanation.available or set(labels) <= explanation.computed.get(m, frozenset()) for m in methods
    )


def _rows(old: np.ndarray | None, new: np.ndarray, rows: frozenset[int]) -> np.ndarray:
    """``old`` with the label rows ``rows`` taken from ``new`` (``new`` itself when there is no ``old``)."""
    if old is None or old.shape != new.shape:
        return new
    out = old.copy()
    idx = sorted(rows)
    out[idx] = new[idx]
    return out


def merged(base: StudyExplanation, part: StudyExplanation) -> StudyExplanation:
    """``base`` with the label rows ``part`` computed (``part.computed``) taken from ``part``.

    Both must explain the same study with the same model; arrays are copied, never changed in place
    (other sessions may be reading ``base``).
    """
    out = dataclasses.replace(
        base,
        heatmaps=dict(base.heatmaps),
        token_scores=dict(base.token_scores),
        word_scores=dict(base.word_scores),
        computed=dict(base.computed),
    )
    for method, rows in part.computed.items():
        for field in ("heatmaps", "token_scores", "word_scores"):
            new = getattr(part, field).get(method)
            if new is not None:
                getattr(out, field)[method] = _rows(getattr(base, field).get(method), new, rows)
        out.computed[method] = base.computed.get(method, frozenset()) | rows
    return out


def explain_lazily(
    cache: ExplanationCache,
    key: Hashable,
    predictor: Predictor,
    study: StudyInput,
    methods: Sequence[str] = (),
    labels: Sequence[str] | None = None,
    checkpoint: Checkpoint = no_checkpoint,
) -> StudyExplanation:
    """The study's explanation holding at least ``methods`` for ``labels``; only what is missing is computed.

    Args:
        cache: The shared cache (one merged explanation per ``key``).
        key: Identifies model and study (e.g. ``(model_uri, results_dir, study_uid)``).
        predictor: The shared model.
        study: The study's inputs.
        methods: Methods wanted now (none: the forward pass, words and which methods apply).
        labels: Labels wanted now (default: all).
        checkpoint: As for :func:`explain_cached`.

    Returns:
        The merged explanation (methods not asked for yet may be absent, rows not asked for yet 0).
    """
    idx = [predictor.labels.index(lab) for lab in labels] if labels is not None else list(range(len(predictor.labels)))
    found = cache.get(key)
    if found is not None and covers(found, methods, idx):
        return found
    missing = [m for m in methods if found is None or not covers(found, [m], idx)]
    part = explain_study(predictor, study, missing, labels=labels, checkpoint=checkpoint)
    return cache.merge(key, part)
