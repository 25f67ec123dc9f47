"""Export reviewed labels for retraining: a label CSV and FHIR R5 resources. No PHI.

- CSV: ``study_uid`` and one column per label, ``1``/``0`` where reviewed, empty where not: the
  label file format of ``medfusion build-manifest --labels`` (:func:`medfusion.data.cohort.read_label_file`).
- FHIR NDJSON: per study one ``DiagnosticReport`` and one ``Observation`` per reviewed label
  (``valueBoolean``), validated with fhir.resources. Status ``final`` when the reviewer agreed with
  the model, ``amended`` when the value was disagreed with or corrected (a report is ``amended``
  when any of its labels is). The reviewer appears only as a pseudonymous identifier
  (:func:`medfusion.privacy.pseudonym`), the model as a Device identifier (name/version), the study
  by its DICOM UID.

Only current decisions (the latest per study and label) are exported. Reviewers' free-text comments
are left out unless ``include_comments`` is set (they may hold identifiers a reviewer typed; see
:mod:`medfusion.review.comment_guard`): then the CSV gains a ``comment`` column (the study's distinct
comments, in label order, joined by `` | ``) and each Observation a second ``note``.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from medfusion.privacy import pseudonym
from medfusion.review.store import DecisionRecord, ReviewStore

LABEL_SYSTEM = "urn:medfusion:label"
REVIEWER_SYSTEM = "urn:medfusion:reviewer"
MODEL_SYSTEM = "urn:medfusion:model"
_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
_NAMESPACE = uuid.UUID("0f3c2a2e-4a57-4d0c-9b1c-6d6564667573")


def labels_frame(store: ReviewStore, labels: Sequence[str], *, include_comments: bool = False) -> pd.DataFrame:
    """Reviewed labels, one row per reviewed study: ``study_uid``, then ``labels`` as 1/0/<NA>
    (then ``comment`` when ``include_comments``)."""
    rows: dict[str, dict[str, object]] = defaultdict(dict)
    comments: dict[str, dict[str, None]] = defaultdict(dict)  # insertion-ordered sets
    for record in sorted(store.current(), key=lambda r: (r.study_uid, labels.index(r.label) if r.label in labels else 0)):
        if record.label in labels:
            rows[record.study_uid][record.label] = int(record.reviewed_value)
            if record.comment:
                comments[record.study_uid][record.comment] = None
    extra = ["comment"] if include_comments else []
    table = pd.DataFrame(
        [
            {"study_uid": uid, **{l: values.get(l) for l in labels}, **{c: " | ".join(comments[uid]) for c in extra}}
            for uid, values in sorted(rows.items())
        ],
        columns=["study_uid", *labels, *extra],
    )
    return table.astype({l: "Int64" for l in labels})


def export_csv(store: ReviewStore, labels: Sequence[str], path: str | Path, *, include_comments: bool = False) -> Path:
    """Write :func:`labels_frame` as a label CSV (empty cells = not reviewed); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labels_frame(store, labels, include_comments=include_comments).to_csv(path, index=False)
    return path


def _status(record: DecisionRecord) -> str:
    return "final" if record.decision == "agree" else "amended"


def _reviewer(record: DecisionRecord) -> dict[str, object]:
    return {"type": "Practitioner", "identifier": {"system": REVIEWER_SYSTEM, "value": pseudonym(record.reviewer, kind="reviewer")}}


def _model(record: DecisionRecord) -> dict[str, object]:
    return {
        "type": "Device",
        "identifier": {"system": MODEL_SYSTEM, "value": f"{record.model_name}/{record.model_version}"},
        "display": f"medfusion model {record.model_name} v{record.model_version}",
    }


def _study(uid: str) -> dict[str, object]:
    return {"type": "ImagingStudy", "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}}


def observation(record: DecisionRecord, *, include_comments: bool = False) -> dict[str, object]:
    """One reviewed label as a validated FHIR R5 Observation (JSON dict); the comment as a second note if asked."""
    from fhir.resources.observation import Observation

    value = record.reviewed_value
    note = (
        f"Reviewed by a clinician ({record.decision}); model probability {record.shown.probability:.3f}"
        f" at threshold {record.shown.threshold:.3f}."
    )
    resource = Observation(
        id=str(uuid.uuid5(_NAMESPACE, f"obs/{record.study_uid}/{record.label}")),
        status=_status(record),
        code={"coding": [{"system": LABEL_SYSTEM, "code": record.label}], "text": record.label},
        valueBoolean=value,
        interpretation=[{"coding": [{"system": _INTERPRETATION, "code": "POS" if value else "NEG"}]}],
        issued=record.decided_at,
        performer=[_reviewer(record)],
        device=_model(record),
        note=[{"text": note}, *([{"text": record.comment}] if include_comments and record.comment else [])],
    )
    return json.loads(resource.model_dump_json(exclude_none=True))


def diagnostic_report(study_uid: str, records: Sequence[DecisionRecord]) -> dict[str, object]:
    """A study's reviewed labels as a validated FHIR R5 DiagnosticReport (JSON dict)."""
    from fhir.resources.diagnosticreport import DiagnosticReport

    amended = any(r.decision != "agree" for r in records)
    positives = sorted(r.label for r in records if r.reviewed_value)
    resource = DiagnosticReport(
        id=str(uuid.uuid5(_NAMESPACE, f"report/{study_uid}")),
        status="amended" if amended else "final",
        code={"text": "medfusion reviewed findings"},
        study=[_study(study_uid)],
        issued=max(r.decided_at for r in records),
        resultsInterpreter=[_reviewer(r) for r in {r.reviewer: r for r in records}.values()],
        result=[{"reference": f"Observation/{uuid.uuid5(_NAMESPACE, f'obs/{study_uid}/{r.label}')}"} for r in records],
        conclusion=("Positive: " + ", ".join(positives)) if positives else "No reviewed finding positive.",
    )
    return json.loads(resource.model_dump_json(exclude_none=True))


def fhir_resources(store: ReviewStore, *, include_comments: bool = False) -> list[dict[str, object]]:
    """Per reviewed study: its DiagnosticReport then its Observations (validated JSON dicts)."""
    by_study: dict[str, list[DecisionRecord]] = defaultdict(list)
    for record in store.current():
        by_study[record.study_uid].append(record)
    resources: list[dict[str, object]] = []
    for uid in sorted(by_study):
        records = sorted(by_study[uid], key=lambda r: r.label)
        resources.append(diagnostic_report(uid, records))
        resources.extend(observation(r, include_comments=include_comments) for r in records)
    return resources


def fhir_ndjson(store: ReviewStore, *, include_comments: bool = False) -> str:
    """:func:`fhir_resources` as NDJSON text (one resource per line)."""
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in fhir_resources(store, include_comments=include_comments))


def export_fhir(store: ReviewStore, path: str | Path, *, include_comments: bool = False) -> Path:
    """Write :func:`fhir_ndjson` to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(fhir_ndjson(store, include_comments=include_comments), encoding="utf-8")
    return path
