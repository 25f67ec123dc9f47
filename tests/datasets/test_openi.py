"""OpenI adapter: XML reports -> reports, MeSH -> 14 labels, label-word removal, manifest, FHIR, split.

Tests marked ``needs_archive`` read the real archive (``NLMCXR_reports.tgz`` inside the torchxrayvision
1.5.7 wheel, see ``benchmarks/fetch_real_assets.sh``) and skip when it is not on this machine.
"""

from __future__ import annotations

import hashlib
import math
import re

import numpy as np
import pytest

from medfusion.datasets.assets import find_openi_archive
from medfusion.datasets.openi import (
    LABEL_WORDS,
    MESH_RULES,
    OPENI_LABELS,
    assign_openi_splits,
    export_openi_fhir,
    label_counts,
    load_or_create_splits,
    mesh_labels,
    openi_manifest,
    openi_study_uid,
    parse_openi_xml,
    read_openi_archive,
    read_openi_splits,
    remove_label_words,
    write_openi_splits,
)
from medfusion.errors import ReportParseError
from medfusion.fhir.read import read_fhir_reports
from medfusion.ingest.manifest import read_manifest, rows_to_records, write_manifest
from medfusion.ingest.records import is_dicom_uid

ARCHIVE = find_openi_archive()
needs_archive = pytest.mark.skipif(
    ARCHIVE is None,
    reason="OpenI archive not found: run benchmarks/fetch_real_assets.sh (pip download --no-deps "
    "torchxrayvision==1.5.7 -d ~/.cache/medfusion) or set MEDFUSION_OPENI_TGZ",
)

#: Positives per label over the 3,955 reports with MESH_RULES as documented in docs/openi.md.
EXPECTED_POSITIVES = {
    "atelectasis": 332,
    "cardiomegaly": 395,
    "consolidation": 30,
    "edema": 101,
    "pleural_effusion": 163,
    "pneumonia": 42,
    "pneumothorax": 27,
    "lung_opacity": 793,
    "lung_lesion": 131,
    "fracture": 84,
    "enlarged_cardiomediastinum": 27,
    "pleural_other": 128,
    "support_devices": 378,
    "no_finding": 1391,
}
#: SHA-256 of openi_splits.csv for the whole archive (seed 0, val 0.1, test 0.2): the split is fixed.
EXPECTED_SPLIT_SHA256 = "2e00e8efe9a16f6e460997b26e9d60da0dd048afa0ca5c960548ec0b8f455198"
EXPECTED_SPLIT_SIZES = {"train": 2791, "val": 405, "test": 759}

SAMPLE_XML = b"""<?xml version="1.0" encoding="utf-8"?>
<eCitation>
  <uId id="CXR90001"/>
  <MedlineCitation><Article><Abstract>
    <AbstractText Label="COMPARISON">None.</AbstractText>
    <AbstractText Label="INDICATION">Cough.</AbstractText>
    <AbstractText Label="FINDINGS">Small left pleural effusion.
      Heart size is normal.</AbstractText>
    <AbstractText Label="IMPRESSION">Left effusion.</AbstractText>
  </Abstract></Article></MedlineCitation>
  <MeSH>
    <major>Pleural Effusion/left/small</major>
    <automatic>pleural effusions</automatic>
  </MeSH>
  <parentImage id="CXR90001_IM-1"/>
  <parentImage id="CXR90001_IM-2"/>
</eCitation>
"""


def positives(labels: dict[str, float]) -> set[str]:
    return {k for k, v in labels.items() if v == 1.0}


@pytest.fixture(scope="module")
def all_reports():
    if ARCHIVE is None:
        pytest.skip("OpenI archive not found")
    return read_openi_archive(ARCHIVE)


# ----------------------------------------------------------------------------------- no archive needed


def test_parse_sample_xml() -> None:
    r = parse_openi_xml(SAMPLE_XML, source="sample.xml")
    assert r.uid == "CXR90001"
    assert r.report.text.splitlines() == [
        "COMPARISON: None.",
        "INDICATION: Cough.",
        "FINDINGS: Small left pleural effusion. Heart size is normal.",
        "IMPRESSION: Left effusion.",
    ]
    assert r.report.sections["FINDINGS"].startswith("Small left") and r.report.sections["HISTORY"] == "Cough."
    assert r.report.report_id == "openi-CXR90001" and r.report.status == "final"
    assert r.mesh_major == ("Pleural Effusion/left/small",) and r.mesh_automatic == ("pleural effusions",)
    assert r.image_ids == ("CXR90001_IM-1", "CXR90001_IM-2")
    assert list(r.labels) == OPENI_LABELS and positives(r.labels) == {"pleural_effusion"}
    assert r.has_findings_or_impression


@pytest.mark.parametrize("data", [b"<eCitation><uId", b"<eCitation><MeSH/></eCitation>"])
def test_bad_xml_is_rejected_with_its_source(data: bytes) -> None:
    with pytest.raises(ReportParseError, match=r"bad\.xml"):
        parse_openi_xml(data, source="bad.xml")


@pytest.mark.parametrize(
    ("terms", "expected"),
    [
        (["normal"], {"no_finding"}),
        (["Cardiomegaly/mild"], {"cardiomegaly"}),
        (["Cardiac Shadow/enlarged/severe"], {"cardiomegaly"}),
        (["Cardiac Shadow/borderline"], set()),
        (["Pulmonary Atelectasis/base/left", "Opacity/lung/base/left"], {"atelectasis", "lung_opacity"}),
        (["Opacity/ribs/left"], set()),  # a bone opacity is not a lung opacity
        (["Hydropneumothorax/right"], {"pleural_effusion", "pneumothorax"}),
        (["Pulmonary Congestion/mild"], {"edema"}),
        (["Nodule/lung/lingula"], {"lung_lesion"}),
        (["Calcified Granuloma/lung/upper lobe/right"], set()),  # benign granuloma: not a lesion label
        (["Mass/breast/large"], set()),
        (["Fractures, Bone/ribs/left/healed"], {"fracture"}),
        (["Mediastinum/prominent/mild"], {"enlarged_cardiomediastinum"}),
        (["Thickening/pleura/apex/bilateral"], {"pleural_other"}),
        (["Costophrenic Angle/left/blunted"], {"pleural_other"}),
        (["Cicatrix/lung/base/left"], {"lung_opacity"}),
        (["Cicatrix/pleura/right"], {"pleural_other"}),
        (["Catheters, Indwelling/right"], {"support_devices"}),
        (["Subcutaneous  Emphysema"], set()),  # unmapped heading, odd spacing: all negative
        (["Thoracic Vertebrae/degenerative/mild"], set()),
    ],
)
def test_mesh_mapping(terms: list[str], expected: set[str]) -> None:
    labels = mesh_labels(terms)
    assert set(labels) == set(OPENI_LABELS)
    assert positives(labels) == expected
    assert all(v in (0.0, 1.0) for v in labels.values())  # no mention = negative


def test_no_indexing_makes_every_label_unknown() -> None:
    assert all(math.isnan(v) for v in mesh_labels(["No Indexing"]).values())


def test_no_finding_needs_normal_and_no_pathology() -> None:
    assert mesh_labels(["normal", "Cardiomegaly"])["no_finding"] == 0.0
    assert mesh_labels(["normal", "Implanted Medical Device/left"])["no_finding"] == 1.0  # devices are no pathology
    assert mesh_labels(["Technical Quality of Image Unsatisfactory"])["no_finding"] == 0.0


def test_every_label_has_rules_or_words_documented() -> None:
    assert list(MESH_RULES) == OPENI_LABELS and list(LABEL_WORDS) == OPENI_LABELS
    assert all(LABEL_WORDS[label] for label in OPENI_LABELS)
    with pytest.raises(ValueError, match="no MeSH mapping"):
        mesh_labels(["normal"], labels=["nodule"])


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("FINDINGS: No pleural effusion or pneumothorax.", None, "FINDINGS: No or."),
        ("IMPRESSION: Normal chest x-XXXX.", None, "IMPRESSION:"),
        ("IMPRESSION: No acute cardiopulmonary abnormality.", None, "IMPRESSION:"),
        ("Mild cardiomegaly. Bibasilar atelectasis.", ["cardiomegaly"], "Mild. Bibasilar atelectasis."),
        ("Right PICC line tip in the SVC.", None, "Right tip in the SVC."),
        ("Healed left rib fractures. Calcified granuloma.", None, "Healed left rib. Calcified granuloma."),
        (
            "FINDINGS: Heart size normal.\nIMPRESSION: Clear lungs.",
            None,
            "FINDINGS: Heart size normal.\nIMPRESSION: Clear lungs.",
        ),
    ],
)
def test_remove_label_words(text: str, labels: list[str] | None, expected: str) -> None:
    assert remove_label_words(text, labels) == expected


def test_remove_label_words_unknown_label() -> None:
    with pytest.raises(ValueError, match="no label words"):
        remove_label_words("text", ["nodule"])


def test_fhir_export_of_the_sample_reads_back(tmp_path) -> None:
    sample = parse_openi_xml(SAMPLE_XML, source="sample.xml")
    path = export_openi_fhir([sample], tmp_path / "sample.ndjson")
    [line] = path.read_text(encoding="utf-8").splitlines()
    assert '"conclusionCode":[{"text":"Pleural Effusion/left/small"}]' in line
    batch = read_fhir_reports(path)  # validates with fhir.resources (R5)
    assert batch.rejected == [] and len(batch.reports) == 1
    back = batch.reports[0]
    assert (back.text, back.report_id) == (sample.report.text, "openi-CXR90001")
    assert back.study_uid == openi_study_uid("CXR90001")


def test_manifest_needs_a_split_for_every_report() -> None:
    sample = parse_openi_xml(SAMPLE_XML)
    assert openi_manifest([sample])["split"].tolist() == [assign_openi_splits([sample.uid])[sample.uid]]
    with pytest.raises(ValueError, match="no split for 1 OpenI id"):
        openi_manifest([sample], {"CXR1": "train"})


def test_split_is_stable_and_stored(tmp_path) -> None:
    uids = [f"CXR{i}" for i in range(1, 301)]
    first = assign_openi_splits(uids)
    assert first == assign_openi_splits(list(reversed(uids)))  # order does not matter
    assert first == {
        u: s for u, s in assign_openi_splits([*uids, "CXR9999"]).items() if u != "CXR9999"
    }  # adding moves none
    assert set(first.values()) == {"train", "val", "test"}
    path = tmp_path / "openi_splits.csv"
    stored = load_or_create_splits(uids, path)
    assert stored == first and read_openi_splits(path) == first
    # The stored file wins: edit it and a later run (even with other fractions) keeps the edit.
    edited = dict(first, CXR1="test" if first["CXR1"] != "test" else "train")
    write_openi_splits(edited, path)
    assert load_or_create_splits(uids, path, test_fraction=0.5) == edited
    # New ids are assigned and appended; the old ones stay.
    grown = load_or_create_splits([*uids, "CXR5000"], path)
    assert {u: grown[u] for u in uids} == edited and "CXR5000" in read_openi_splits(path)


# -------------------------------------------------------------------------------- the real archive


@needs_archive
def test_whole_archive(all_reports) -> None:
    assert len(all_reports) == 3955
    assert len({r.uid for r in all_reports}) == 3955  # one report per patient
    assert all(re.fullmatch(r"CXR\d+", r.uid) for r in all_reports)
    assert sum(r.has_findings_or_impression for r in all_reports) == 3955 - 28
    unknown = [r for r in all_reports if all(math.isnan(v) for v in r.labels.values())]
    assert len(unknown) == 95 and all(r.mesh_major == ("No Indexing",) for r in unknown)
    counts = label_counts(all_reports)
    assert counts["positive"].to_dict() == EXPECTED_POSITIVES
    assert (counts["unknown"] == 95).all()


@needs_archive
def test_first_report(all_reports) -> None:
    r = all_reports[0]
    assert r.uid == "CXR1" and r.mesh_major == ("normal",)
    assert positives(r.labels) == {"no_finding"}
    assert r.image_ids == ("CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001")
    assert set(r.report.sections) == {"COMPARISON", "HISTORY", "FINDINGS", "IMPRESSION"}
    assert "pneumothorax" in r.report.sections["FINDINGS"]


@needs_archive
def test_label_words_gone_from_real_reports(all_reports) -> None:
    every_word = re.compile(rf"\b(?:{'|'.join(w for ws in LABEL_WORDS.values() for w in ws)})\b", re.IGNORECASE)
    for r in all_reports[:300]:
        cleaned = remove_label_words(r.report.text)
        assert every_word.search(cleaned) is None, (r.uid, cleaned)
        headings = [line.split(":")[0] for line in r.report.text.splitlines()]
        assert [line.split(":")[0] for line in cleaned.splitlines()] == headings


@needs_archive
def test_split_of_the_archive_is_fixed(all_reports, tmp_path) -> None:
    splits = load_or_create_splits([r.uid for r in all_reports], tmp_path / "openi_splits.csv")
    assert {s: list(splits.values()).count(s) for s in ("train", "val", "test")} == EXPECTED_SPLIT_SIZES
    assert hashlib.sha256((tmp_path / "openi_splits.csv").read_bytes()).hexdigest() == EXPECTED_SPLIT_SHA256


@needs_archive
@pytest.mark.parametrize("remove_words", [False, True])
def test_manifest_round_trip(all_reports, tmp_path, remove_words: bool) -> None:
    reports = all_reports[:40]
    frame = openi_manifest(reports, remove_words=remove_words)
    path = write_manifest(frame, tmp_path / "openi.parquet")
    back = read_manifest(path, OPENI_LABELS)
    assert len(back) == 40 and back["study_uid"].is_unique and back["patient_pseudonym"].is_unique
    assert all(is_dicom_uid(u) for u in back["study_uid"]) and back["study_uid"][0] == openi_study_uid("CXR1")
    assert all(list(p) == [] for p in back["image_paths"])  # text only
    assert (
        back["report_text"] == [remove_label_words(r.report.text) if remove_words else r.report.text for r in reports]
    ).all()
    records = rows_to_records(back, OPENI_LABELS)
    expected = np.array([[r.labels[x] for x in OPENI_LABELS] for r in reports], dtype=np.float32)
    np.testing.assert_array_equal(np.stack([rec["label"] for rec in records]), expected)


@needs_archive
def test_fhir_export_validates_and_reads_back(all_reports, tmp_path) -> None:
    reports = [r for r in all_reports[:60] if r.report.text][:50]
    path = export_openi_fhir(reports, tmp_path / "openi.ndjson")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(reports)
    batch = read_fhir_reports(path)  # validates every resource with fhir.resources (R5)
    assert batch.rejected == []
    assert [b.text for b in batch.reports] == [r.report.text for r in reports]
    assert [b.study_uid for b in batch.reports] == [openi_study_uid(r.uid) for r in reports]
    assert [b.report_id for b in batch.reports] == [f"openi-{r.uid}" for r in reports]
    assert '"conclusionCode"' in lines[0] and '"text":"normal"' in lines[0]
