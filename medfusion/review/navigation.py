"""Moving between studies without losing work: the study queue and per-study decision drafts.

A reviewer's choices on a study live in the session as drafts (label -> ``agree``/``disagree``) until
saved; leaving the study (Previous/Next, the worklist, a link) keeps them, the app marks the study
"unsaved" and warns. A draft counts as unsaved while it differs from the label's saved decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from medfusion.review.store import DecisionKind

#: The decision query parameter of a study's URL: ``/study?study=<StudyInstanceUID>``.
STUDY_PARAM = "study"

#: Decisions offered for a yes/no label: "disagree" already means the opposite value, so there is no
#: "corrected" value to state (the store keeps ``corrected`` for labels with more than two values).
BINARY_DECISIONS: tuple[DecisionKind, ...] = ("agree", "disagree")


def unsaved_labels(drafts: Mapping[str, str | None], saved: Mapping[str, str]) -> list[str]:
    """Labels whose draft decision is set and differs from the saved one (in draft order).

    Args:
        drafts: Label -> drafted decision (None: no choice).
        saved: Label -> the label's current saved decision (absent: none saved).
    """
    return [label for label, kind in drafts.items() if kind is not None and saved.get(label) != kind]


def neighbour(queue: Sequence[str], uid: str, step: int) -> str | None:
    """The study ``step`` places from ``uid`` in ``queue`` (None past either end, or when ``uid`` is not queued)."""
    if uid not in queue:
        return None
    at = list(queue).index(uid) + step
    return queue[at] if 0 <= at < len(queue) else None


def study_path(uid: str) -> str:
    """The app-relative URL of a study: ``study?study=<uid>`` (UIDs are digits and dots: no escaping)."""
    return f"study?{STUDY_PARAM}={uid}"
