"""HTML fragments of the study view (probabilities against thresholds, contributions, word evidence) and
which evidence methods to offer; no Streamlit."""

from __future__ import annotations

import html
import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medfusion.results import decide

_POS, _NEG = "#e5484d", "#3e9b4f"


def probability_table_html(
    labels: Sequence[str], probabilities: Sequence[float] | np.ndarray, thresholds: Sequence[float] | np.ndarray
) -> str:
    """A compact table: label, a probability bar with the threshold as a tick, the value, the call.

    Args:
        labels: (L,) label names.
        probabilities: (L,) calibrated probabilities.
        thresholds: (L,) decision thresholds.
    """
    rows = []
    for label, p, t, positive in zip(labels, probabilities, thresholds, decide(probabilities, thresholds), strict=True):
        colour = _POS if positive else _NEG
        bar = (
            '<div style="position:relative;height:12px;background:rgba(128,128,128,0.25);border-radius:3px">'
            f'<div style="width:{100 * p:.1f}%;height:100%;background:{colour};border-radius:3px"></div>'
            f'<div title="threshold {t:.2f}" style="position:absolute;left:{100 * t:.1f}%;top:-3px;'
            'width:2px;height:18px;background:currentColor"></div></div>'
        )
        call = "POSITIVE" if positive else "negative"
        rows.append(
            f'<tr><td style="padding:2px 8px 2px 0;white-space:nowrap"><b>{html.escape(label)}</b></td>'
            f'<td style="width:55%;padding:2px 8px">{bar}</td>'
            f'<td style="padding:2px 4px;font-variant-numeric:tabular-nums">{p:.2f}</td>'
            f'<td style="padding:2px 4px;color:gray;font-variant-numeric:tabular-nums">t={t:.2f}</td>'
            f'<td style="padding:2px 0 2px 6px;color:{colour};font-weight:600">{call}</td></tr>'
        )
    return '<table style="width:100%;border-collapse:collapse;font-size:0.9rem">' + "".join(rows) + "</table>"


def contributions_table_html(labels: Sequence[str], contributions: Mapping[str, np.ndarray]) -> str:
    """Signed per-label logit contribution of each modality slot, as a table of diverging bars.

    Args:
        labels: (L,) label names.
        contributions: Slot (``image``/``text``/``joint``) -> (L,) signed logit contributions.
    """
    slots = [s for s in ("image", "text", "joint") if s in contributions] + sorted(
        s for s in contributions if s not in ("image", "text", "joint")
    )
    if not slots:
        return "<p>No modality contributions for this model.</p>"
    scale = max(1e-6, max(float(np.max(np.abs(contributions[s]))) for s in slots))
    head = "".join(f'<th style="text-align:left;padding:2px 6px">{html.escape(s)}</th>' for s in slots)
    rows = []
    for i, label in enumerate(labels):
        cells = []
        for s in slots:
            v = float(contributions[s][i])
            width = 50 * abs(v) / scale
            left = 50 if v >= 0 else 50 - width
            colour = _POS if v >= 0 else "#4c8bf5"
            cells.append(
                '<td style="padding:2px 6px;min-width:90px"><div style="position:relative;height:10px;'
                'background:rgba(128,128,128,0.15)">'
                f'<div style="position:absolute;left:{left:.1f}%;width:{width:.1f}%;height:100%;'
                f'background:{colour}"></div>'
                '<div style="position:absolute;left:50%;width:1px;height:100%;background:gray"></div></div>'
                f'<span style="font-size:0.75rem;font-variant-numeric:tabular-nums">{v:+.2f}</span></td>'
            )
        rows.append(f'<tr><td style="padding:2px 6px 2px 0"><b>{html.escape(label)}</b></td>{"".join(cells)}</tr>')
    return (
        '<table style="width:100%;border-collapse:collapse;font-size:0.85rem">'
        f"<tr><th></th>{head}</tr>{''.join(rows)}</table>"
    )


def word_evidence_html(
    text: str,
    words: Sequence[Any],
    scores: np.ndarray | None,
    negation_scopes: Sequence[tuple[int, int]] = (),
    top_k: int = 8,
) -> str:
    """The report as HTML: the ``top_k`` words of largest |evidence| highlighted, negation scopes underlined.

    Evidence for the label is orange, evidence against it blue (opacity = |score|); words a negation
    denies ("no *pleural effusion*") carry a dotted underline and the tooltip "negated".

    Args:
        text: The report text the model read.
        words: (W,) :class:`medfusion.explain.words.Word` (text, span, tokens, negated).
        scores: (W,) signed word scores in [-1, 1], or None (plain text, scopes still shown).
        negation_scopes: Character ranges a negation denies.
        top_k: Words highlighted.

    Returns:
        HTML (escaped text, ``<mark>``/``<span>`` elements, line breaks kept).
    """
    marks: dict[int, tuple[int, float]] = {}  # word start -> (end, score)
    if scores is not None and len(words):
        values = np.asarray(scores, dtype=np.float64)
        for w in np.argsort(-np.abs(values), kind="stable")[:top_k]:
            if values[w] != 0:
                a, b = words[w].span
                marks[a] = (b, float(values[w]))
    negated = np.zeros(len(text) + 1, dtype=bool)
    for a, b in negation_scopes:
        negated[a:b] = True
    cuts = sorted({0, len(text), *marks, *(b for b, _ in marks.values()), *(x for s in negation_scopes for x in s)})
    parts = []
    for a, b in itertools.pairwise(cuts):
        if a >= b:
            continue
        chunk = html.escape(text[a:b]).replace("\n", "<br>")
        if negated[a]:
            chunk = f'<span title="negated" style="text-decoration: underline dotted">{chunk}</span>'
        owner = next(((e, v) for s, (e, v) in marks.items() if s <= a and b <= e), None)
        if owner is not None:
            v = owner[1]
            rgb = "255, 140, 0" if v > 0 else "76, 139, 245"
            alpha = 0.25 + 0.65 * min(abs(v), 1.0)
            tip = f"{'for' if v > 0 else 'against'} the label ({v:+.2f})"
            chunk = f'<mark title="{tip}" style="background: rgba({rgb}, {alpha:.2f}); padding: 0 1px">{chunk}</mark>'
        parts.append(chunk)
    return "".join(parts)


def failed_checks(model_dir: str | Path | None, model_id: str) -> dict[str, str]:
    """Method -> why it failed its recorded faithfulness check (:mod:`medfusion.explain.checks`), for the model."""
    from medfusion.explain.checks import failed_methods, read_checks

    return failed_methods(read_checks(model_dir, model_id))


def evidence_methods(
    available: Sequence[str], candidates: Sequence[str], failed: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """Which evidence methods to offer, and why the others are not shown.

    Args:
        available: Methods that apply to the study.
        candidates: The panel's methods in preference order.
        failed: Method -> reason, for methods whose recorded check failed (:func:`failed_checks`).

    Returns:
        ``(shown, hidden)``: methods to offer (preference order), and method -> reason for the
        available ones that failed.
    """
    shown = [m for m in candidates if m in available and m not in failed]
    hidden = {m: failed[m] for m in candidates if m in available and m in failed}
    return shown, hidden
