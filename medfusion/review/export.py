"""Export reviewed labels for retraining: a label CSV and FHIR R5 resources. No PHI.

- CSV: ``study_uid`` and one column per label, ``1``/``0`` where reviewed, empty where not: the
  label file format of ``medfusion build-manifest --labels`` (:func:`medfusion.ingest.label_file.read_label_file`).
- FHIR NDJSON: per study one ``DiagnosticReport`` and one ``Observation`` per reviewed label
  (``valueBoolean``), written by :func:`medfusion.fhir.write.reviewed_resources`. Status ``final``
  when the reviewer agreed with the model, ``amended`` when the value was disagreed with or
  corrected (a report is ``amended`` when any of its labels is). The reviewer appears only as a
  pseudonymous identifier (:func:`medfusion.privacy.pseudonym`), the model as a Device identifier
  (name/version), the study by its DICOM UID.

Only current decisions (the latest per study and label) are exported. Reviewers' free-text comments
are left out unless ``include_comments`` is set (they may hold identifiers a reviewer typed; see
:mod:`medfusion.review.comment_guard`): then the CSV gains a ``comment`` column (the study's distinct
comments, in label order, joined by `` | ``) and each Observation a second ``note``.

This module chooses what leaves the review store (:func:`reviewed_label`); :mod:`medfusion.fhir.write`
decides how it is written.

Imports: pandas, :mod:`medfusion.fhir.write`, :mod:`medfusion.privacy`, :mod:`medfusion.review.store`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from fhir.resources.resource import Resource

from medfusion.fhir.write import ReviewedLabel, ndjson_text, reviewed_resources, write_fhir_ndjson
from medfusion.privacy import pseudonym
from medfusion.review.store import DecisionRecord, ReviewStore


def labels_frame(store: ReviewStore, labels: Sequence[str], *, include_comments: bool = False) -> pd.DataFrame:
    """Reviewed labels, one row per reviewed study: ``study_uid``, then ``labels`` as 1/0/<NA>
    (then ``comment`` when ``include_comments``)."""
    rows: dict[str, dict[str, object]] = defaultdict(dict)
    comments: dict[str, dict[str, None]] = defaultdict(dict)  # insertion-ordered sets
    for record in sorted(
        store.current(), key=lambda r: (r.study_uid, labels.index(r.label) if r.label in labels else 0)
    ):
        if record.label in labels:
            rows[record.study_uid][record.label] = int(record.reviewed_value)
            if record.comment:
                comments[record.study_uid][record.comment] = None
    extra = ["comment"] if include_comments else []
    table = pd.DataFrame(
        [
            {
                "study_uid": uid,
                **{lab: values.get(lab) for lab in labels},
                **{c: " | ".join(comments[uid]) for c in extra},
            }
            for uid, values in sorted(rows.items())
        ],
        columns=["study_uid", *labels, *extra],
    )
    return table.astype({lab: "Int64" for lab in labels})


def export_csv(store: ReviewStore, labels: Sequence[str], path: str | Path, *, include_comments: bool = False) -> Path:
    """Write :func:`labels_frame` as a label CSV (empty cells = not reviewed); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labels_frame(store, labels, include_comments=include_comments).to_csv(path, index=False)
    return path


def reviewed_label(record: DecisionRecord, *, include_comments: bool = False) -> ReviewedLabel:
    """A current decision as the FHIR writer's :class:`~medfusion.fhir.write.ReviewedLabel`.

    The reviewer becomes a pseudonym (:func:`medfusion.privacy.pseudonym`); the comment goes along
    only when ``include_comments`` is set.
    """
    return ReviewedLabel(
        study_uid=record.study_uid,
        label=record.label,
        value=record.reviewed_value,
        decision=record.decision,
        reviewer=pseudonym(record.reviewer, kind="reviewer"),
        decided_at=record.decided_at,
        model_name=record.model_name,
        model_version=record.model_version,
        probability=record.shown.probability,
        threshold=record.shown.threshold,
        comment=(record.comment or None) if include_comments else None,
    )


def fhir_resources(store: ReviewStore, *, include_comments: bool = False) -> list[Resource]:
    """Per reviewed study: its DiagnosticReport then its Observations, validated.

    Written by :func:`medfusion.fhir.write.reviewed_resources`; comments only with ``include_comments``.
    """
    return reviewed_resources(reviewed_label(r, include_comments=include_comments) for r in store.current())


def fhir_ndjson(store: ReviewStore, *, include_comments: bool = False) -> str:
    """:func:`fhir_resources` as NDJSON text (one resource per line)."""
    return ndjson_text(fhir_resources(store, include_comments=include_comments))


def export_fhir(store: ReviewStore, path: str | Path, *, include_comments: bool = False) -> Path:
    """Write :func:`fhir_resources` as NDJSON to ``path`` (replaced atomically); returns the path."""
    return write_fhir_ndjson(fhir_resources(store, include_comments=include_comments), path)
