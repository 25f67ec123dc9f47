"""Synthetic radiology report texts for the demo cohort, with the evidence for each text finding.

A report has the sections ``EXAMINATION``, ``INDICATION``, ``COMPARISON``, ``FINDINGS`` and
``IMPRESSION``, drawn from varied templates. Which finding lives where is the point of the cohort:

* ``effusion`` and ``fracture`` are **text-only**: stated in FINDINGS (and usually IMPRESSION) when
  present, either plainly ("Small left pleural effusion.") or hedged ("possible", "likely",
  "cannot be excluded"; hedged statements are still positive labels); when absent they are negated
  ("No pleural effusion.", "without evidence of effusion", "No acute osseous abnormality.") or not
  mentioned at all. The images carry no sign of them.
* ``nodule`` and ``cardiomegaly`` are **image-only**: the report never speaks about the heart,
  the mediastinal silhouette, nodules, masses or lung opacities. It is an "incomplete" report, as real
  reports dictated for a focused clinical question often are. Every sentence that is not about
  effusion, fracture or the clinical context is drawn independently of all labels.
* ``pneumonia`` needs both: the INDICATION states an infectious clinical context (fever, productive
  cough, raised white cell count) or not, and the image shows a lower-zone consolidation or not; the
  label is the AND of the two. The report says nothing about the consolidation.
* Confounder phrases ("Rule out pneumonia.", "Shortness of breath.", "History of smoking.",
  "Low lung volumes."...) appear at the same rate whatever the labels.

:func:`generate_report` returns the text and, for each text finding, the character spans that state
(or negate) it, so that explanation tests can check where a text model looks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

#: Findings the report text carries (pneumonia only through its clinical context).
TEXT_FINDINGS = ("effusion", "fracture", "pneumonia")

Assertion = Literal["positive", "uncertain", "negated"]

_SIDES = ("left", "right")
#: Fracture sites: mostly ribs, sometimes the clavicle.
_SITES = ("4th rib", "5th rib", "6th rib", "7th rib", "8th rib", "9th rib", "clavicle")

# --- effusion -------------------------------------------------------------------------------------
_EFFUSION_POSITIVE = (
    "Small {side} pleural effusion.",
    "Moderate {side} pleural effusion with blunting of the costophrenic angle.",
    "There is a layering {side} pleural effusion.",
    "Blunting of the {side} costophrenic angle consistent with a small effusion.",
)
_EFFUSION_UNCERTAIN = (
    "Possible small {side} pleural effusion.",
    "Blunting of the {side} costophrenic angle, likely a small effusion.",
    "A trace {side} pleural effusion cannot be excluded.",
    "Probable small {side} effusion.",
)
_EFFUSION_NEGATED = (
    "No pleural effusion.",
    "No pleural effusion or pneumothorax.",
    "The costophrenic angles are sharp without evidence of effusion.",
    "Negative for pleural effusion.",
)
_EFFUSION_IMPRESSION_POSITIVE: tuple[str, ...] = (
    "Small {side} pleural effusion.",
    "{Side} pleural effusion.",
    "Pleural effusion on the {side}.",
)
_EFFUSION_IMPRESSION_UNCERTAIN: tuple[str, ...] = (
    "Possible small {side} pleural effusion.",
    "Likely small {side} effusion; follow-up suggested.",
)

# --- fracture -------------------------------------------------------------------------------------
_FRACTURE_POSITIVE = (
    "Healed fracture of the {side} {site}.",
    "Old healed {side} {site} fracture.",
    "Acute nondisplaced fracture of the {side} {site}.",
    "Minimally displaced fracture of the {side} {site}.",
)
_FRACTURE_UNCERTAIN = (
    "Possible nondisplaced fracture of the {side} {site}.",
    "Subtle cortical irregularity of the {side} {site}, likely a healing fracture.",
    "An occult fracture of the {side} {site} cannot be excluded.",
)
_FRACTURE_NEGATED = (
    "No acute osseous abnormality.",
    "No displaced rib fracture.",
    "Osseous structures are intact without fracture.",
    "No acute fracture identified.",
)
_FRACTURE_IMPRESSION_POSITIVE: tuple[str, ...] = (
    "{Side} {site} fracture.",
    "Fracture of the {side} {site} as described.",
)
_FRACTURE_IMPRESSION_UNCERTAIN: tuple[str, ...] = ("Possible {side} {site} fracture; correlate with point tenderness.",)

# --- clinical context (INDICATION) ----------------------------------------------------------------
_INFECTIOUS_CONTEXT = (
    "Fever and productive cough.",
    "Fever to 38.9 C and productive cough for 3 days.",
    "Elevated WBC and fever.",
    "Productive cough with purulent sputum, febrile.",
    "Leukocytosis and fever.",
    "Febrile with productive cough.",
)
_OTHER_CONTEXT = (
    "Pre-operative assessment.",
    "Routine follow-up.",
    "Chest pain.",
    "Fall at home, chest wall pain.",
    "Dizziness.",
    "Staging examination.",
    "Hypertension, annual check.",
)
#: (phrase, rate): added to INDICATION at this rate, independently of every label.
_INDICATION_CONFOUNDERS = (
    ("Rule out pneumonia.", 0.3),
    ("Shortness of breath.", 0.3),
    ("History of smoking.", 0.2),
    ("Known COPD.", 0.15),
)

# --- label-independent sentences ------------------------------------------------------------------
_EXAMINATION = {
    True: ("Chest radiograph, PA and lateral views.", "Chest, two views.", "XR chest PA and lateral."),
    False: ("Chest radiograph, single frontal view.", "Chest, one view.", "XR chest PA."),
}
_COMPARISON = (
    "None.",
    "None available.",
    "Prior radiograph, no significant interval change in the osseous structures.",
)
_NEUTRAL_FINDINGS = (
    "No pneumothorax.",
    "The trachea is midline.",
    "The visualized upper abdomen is unremarkable.",
    "No subcutaneous emphysema.",
    "No free air under the diaphragm.",
)
#: (phrase, rate): FINDINGS confounders, independent of every label.
_FINDINGS_CONFOUNDERS = (
    ("Low lung volumes.", 0.2),
    ("Mild degenerative changes of the thoracic spine.", 0.2),
    ("The patient is slightly rotated.", 0.2),
    ("Portable technique limits evaluation.", 0.1),
)
_NORMAL_IMPRESSION = (
    "No pleural effusion. No acute osseous abnormality.",
    "No effusion or acute fracture.",
    "Negative for pleural effusion or acute osseous abnormality.",
)


@dataclass(frozen=True)
class EvidenceSpan:
    """Where a report states (or negates) a finding.

    Attributes:
        label: The finding (``effusion``, ``fracture`` or ``pneumonia``).
        start: Start character offset in the report text.
        end: End character offset (exclusive); ``text[start:end]`` is the statement.
        text: The statement itself.
        section: The section it sits in (``FINDINGS``, ``IMPRESSION``, ``INDICATION``).
        assertion: ``positive``, ``uncertain`` (hedged but a positive label) or ``negated``.
    """

    label: str
    start: int
    end: int
    text: str
    section: str
    assertion: Assertion

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class GeneratedReport:
    """A generated report.

    Attributes:
        text: The full text (sections separated by newlines, no surrounding whitespace).
        evidence: Spans stating or negating each text finding (none for an unmentioned finding).
    """

    text: str
    evidence: tuple[EvidenceSpan, ...]


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _fill(template: str, side: str, site: str) -> str:
    return template.format(side=side, Side=side.capitalize(), site=site)


@dataclass
class _Sentence:
    """One sentence and the (label, assertion) pairs it states."""

    text: str
    labels: tuple[tuple[str, Assertion], ...] = ()


def _finding_sentences(
    rng: np.random.Generator,
    label: str,
    present: bool,
    *,
    positive: tuple[str, ...],
    uncertain: tuple[str, ...],
    negated: tuple[str, ...],
) -> tuple[_Sentence | None, Assertion | None, str, str]:
    """FINDINGS statement for one text finding: (sentence or None, assertion, side, site)."""
    side, site = _pick(rng, _SIDES), _pick(rng, _SITES)
    if present:
        assertion: Assertion = "uncertain" if rng.random() < 0.3 else "positive"
        template = _pick(rng, uncertain if assertion == "uncertain" else positive)
        return _Sentence(_fill(template, side, site), ((label, assertion),)), assertion, side, site
    if rng.random() < 0.75:
        return _Sentence(_pick(rng, negated), ((label, "negated"),)), "negated", side, site
    return None, None, side, site


def generate_report(
    rng: np.random.Generator, *, effusion: bool, fracture: bool, infectious_context: bool, two_views: bool
) -> GeneratedReport:
    """Write one report.

    Args:
        rng: Random generator (the only source of randomness).
        effusion: The study has a pleural effusion (stated, possibly hedged; else negated or omitted).
        fracture: The study has a fracture (stated, possibly hedged; else negated or omitted).
        infectious_context: The INDICATION states fever / productive cough / raised white cell count.
        two_views: The study has PA and lateral images (only changes the EXAMINATION line).

    Returns:
        The text and the evidence spans of ``effusion``, ``fracture`` and ``pneumonia`` (the
        infectious context; a study without it has no pneumonia span).
    """
    # INDICATION: the clinical context plus label-independent confounders, in random order.
    indication = (
        [_Sentence(_pick(rng, _INFECTIOUS_CONTEXT), (("pneumonia", "positive"),))]
        if infectious_context
        else [_Sentence(_pick(rng, _OTHER_CONTEXT))]
    )
    indication += [_Sentence(p) for p, rate in _INDICATION_CONFOUNDERS if rng.random() < rate]
    indication = [indication[i] for i in rng.permutation(len(indication))]

    effusion_sentence, effusion_assertion, eff_side, _ = _finding_sentences(
        rng, "effusion", effusion, positive=_EFFUSION_POSITIVE, uncertain=_EFFUSION_UNCERTAIN, negated=_EFFUSION_NEGATED
    )
    fracture_sentence, fracture_assertion, fx_side, fx_site = _finding_sentences(
        rng, "fracture", fracture, positive=_FRACTURE_POSITIVE, uncertain=_FRACTURE_UNCERTAIN, negated=_FRACTURE_NEGATED
    )
    n_neutral = int(rng.integers(2, 4))
    neutral = [_NEUTRAL_FINDINGS[i] for i in rng.choice(len(_NEUTRAL_FINDINGS), size=n_neutral, replace=False)]
    findings = [_Sentence(s) for s in neutral]
    findings += [_Sentence(p) for p, rate in _FINDINGS_CONFOUNDERS if rng.random() < rate]
    findings += [s for s in (effusion_sentence, fracture_sentence) if s is not None]
    findings = [findings[i] for i in rng.permutation(len(findings))]

    impression: list[_Sentence] = []
    if effusion and effusion_assertion is not None:  # a present finding is stated (positive or hedged)
        options = _EFFUSION_IMPRESSION_UNCERTAIN if effusion_assertion == "uncertain" else _EFFUSION_IMPRESSION_POSITIVE
        impression.append(_Sentence(_fill(_pick(rng, options), eff_side, ""), (("effusion", effusion_assertion),)))
    if fracture and fracture_assertion is not None:
        options = _FRACTURE_IMPRESSION_UNCERTAIN if fracture_assertion == "uncertain" else _FRACTURE_IMPRESSION_POSITIVE
        impression.append(_Sentence(_fill(_pick(rng, options), fx_side, fx_site), (("fracture", fracture_assertion),)))
    if not impression:
        impression.append(_Sentence(_pick(rng, _NORMAL_IMPRESSION), (("effusion", "negated"), ("fracture", "negated"))))
    elif rng.random() < 0.5:
        impression.append(_Sentence("Otherwise no acute abnormality."))

    sections = (
        ("EXAMINATION", [_Sentence(_pick(rng, _EXAMINATION[two_views]))]),
        ("INDICATION", indication),
        ("COMPARISON", [_Sentence(_pick(rng, _COMPARISON))]),
        ("FINDINGS", findings),
        ("IMPRESSION", impression),
    )
    return _assemble(sections)


def _assemble(sections: tuple[tuple[str, list[_Sentence]], ...]) -> GeneratedReport:
    """Join sections into the text, recording each labelled sentence's character span."""
    text = ""
    evidence: list[EvidenceSpan] = []
    for n, (name, sentences) in enumerate(sections):
        text += ("\n" if n else "") + f"{name}: "
        for k, sentence in enumerate(sentences):
            if k:
                text += " "
            start = len(text)
            text += sentence.text
            for label, assertion in sentence.labels:
                evidence.append(EvidenceSpan(label, start, len(text), sentence.text, name, assertion))
    return GeneratedReport(text, tuple(evidence))
