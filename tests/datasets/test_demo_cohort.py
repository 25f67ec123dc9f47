"""The demo cohort: raw archive realism, determinism, and that each modality carries its signal.

One small cohort (40 studies, 64x64) is generated per module; the probes are simple and not
learned (keyword counts with negation, mean intensities), so they test the data, not a model.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from sklearn.metrics import roc_auc_score

from medfusion.config import DemoCohortConfig
from medfusion.datasets.demo.cohort import DEMO_LABELS, generate_demo_cohort
from medfusion.errors import ConfigError, ManifestError
from medfusion.ingest.archive import build_manifest
from medfusion.ingest.dicom.read import read_dicom
from medfusion.ingest.label_file import read_label_file
from medfusion.ingest.linkage import NO_STUDY
from medfusion.ingest.manifest import manifest_hash, read_manifest

N_STUDIES = 40
SIZE = 64
CONFIG = DemoCohortConfig(n_studies=N_STUDIES, image_size=SIZE, seed=0, broken_files=3)

_NEGATION = re.compile(r"\b(no|without|negative for)\b", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.;])\s+|\n")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("demo") / "cohort"
    result = generate_demo_cohort(root, CONFIG, labels=list(DEMO_LABELS), progress=False)
    manifest = read_manifest(result.manifest_path, labels=list(DEMO_LABELS))
    return result, manifest


@pytest.fixture(scope="module")
def frontal(cohort):
    """study_uid -> (display image of the frontal view (rows, cols), masks npz as a dict)."""
    _result, manifest = cohort
    out = {}
    for row in manifest.itertuples():
        image = read_dicom(row.image_paths[0])
        with np.load(row.lesion_mask_path) as npz:
            masks = {k: npz[k] for k in npz.files}
        frame = int(masks["frame"])
        out[row.study_uid] = (image.pixels[frame, 0].numpy(), masks, image.meta)
    return out


def _keyword_score(text: str, keywords: tuple[str, ...]) -> float:
    """Number of non-negated sentences that contain one of ``keywords`` (a NegEx-like probe)."""
    sentences = [s for s in _SENTENCE.split(text) if s]
    return float(sum(1 for s in sentences if any(k in s.lower() for k in keywords) and not _NEGATION.search(s)))


# ------------------------------------------------------------------------------------ the archive


def test_every_good_study_is_in_the_manifest(cohort) -> None:
    result, manifest = cohort
    truth = pd.read_csv(result.root / "labels.csv", dtype={"study_uid": str})
    assert result.n_studies == N_STUDIES == len(manifest)
    assert set(manifest["study_uid"]) == set(truth["study_uid"])
    assert result.labels == list(DEMO_LABELS)
    merged = manifest.merge(truth, on="study_uid")
    for label in DEMO_LABELS:
        np.testing.assert_array_equal(merged[f"y_{label}"].to_numpy(), merged[label].to_numpy(dtype=float))


def test_broken_files_are_rejected_with_reasons(cohort) -> None:
    result, manifest = cohort
    by_name = {Path(r.source).name: r.reason for r in result.rejected}
    assert "truncated" in by_name["partial_transfer_0.dcm"]
    assert by_name["NOPIXELS1"] == "no pixel data"
    assert "not a DICOM file" in by_name["scan_notes_2.dcm"]
    used = {p for paths in manifest["image_paths"] for p in paths}
    assert not any(r.source in used for r in result.rejected)
    rejected_csv = pd.read_csv(result.root / "rejected.csv")
    assert list(rejected_csv.columns) == ["source", "reason"]
    assert len(rejected_csv) == len(result.rejected)
    assert not rejected_csv["source"].str.startswith("/").any()  # relative to the cohort folder


def test_reports_that_match_no_study_are_rejected(cohort) -> None:
    result, _ = cohort
    orphans = [r for r in result.rejected if r.reason == NO_STUDY]
    assert len(orphans) == 2
    assert {Path(r.source.split(":")[0].split("#")[0]).name for r in orphans} == {
        "diagnostic_reports.ndjson",
        "bundle_extra.json",
    }


def test_some_studies_have_no_report(cohort) -> None:
    _, manifest = cohort
    missing = int((manifest["report_text"] == "").sum())
    assert missing == round(0.05 * N_STUDIES)
    assert (manifest["report_text"] != "").sum() == N_STUDIES - missing


def test_fhir_inputs_use_both_formats_and_all_link_kinds(cohort) -> None:
    result, _ = cohort
    lines = (result.root / "reports" / "diagnostic_reports.ndjson").read_text().splitlines()
    resources = [json.loads(line) for line in lines]
    kinds = Counter(r["resourceType"] for r in resources)
    assert kinds["DiagnosticReport"] > 20 and kinds["ImagingStudy"] >= 1
    reports = [r for r in resources if r["resourceType"] == "DiagnosticReport"]
    by_accession = [r for r in reports if any(i.get("type") for i in r.get("identifier", []))]
    by_reference = [r for r in reports if any("reference" in s for s in r.get("study", []))]
    by_uid = [r for r in reports if any("identifier" in s for s in r.get("study", []))]
    assert by_accession and by_reference and by_uid
    bundle = json.loads((result.root / "reports" / "bundle_extra.json").read_text())
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"


def test_dicom_variety(cohort) -> None:
    _, manifest = cohort
    paths = [p for paths in manifest["image_paths"] for p in paths]
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    syntaxes = Counter(str(h.file_meta.TransferSyntaxUID) for h in headers)
    assert {
        pydicom.uid.ExplicitVRLittleEndian,
        pydicom.uid.ImplicitVRLittleEndian,
        pydicom.uid.RLELossless,
        pydicom.uid.JPEGLSLossless,
        pydicom.uid.JPEG2000Lossless,
        pydicom.uid.JPEGBaseline8Bit,
    } <= set(syntaxes)
    assert sum(h.PhotometricInterpretation == "MONOCHROME1" for h in headers) >= 3
    assert sum(int(h.get("NumberOfFrames", 1)) == 3 for h in headers) >= 1
    assert any("RescaleSlope" in h for h in headers) and any("WindowCenter" in h for h in headers)
    assert {h.Modality for h in headers} == {"CR", "DX"}
    assert Counter(int(h.BitsStored) for h in headers)[12] > len(headers) // 2
    assert {h.ViewPosition for h in headers} == {"PA", "LL"}
    assert any(len(p) == 2 for p in manifest["image_paths"])
    assert all(pydicom.dcmread(p[0], stop_before_pixels=True).ViewPosition == "PA" for p in manifest["image_paths"])
    # Fake but realistic identities are in the files (privacy tests scan outputs for them).
    assert all(str(h.PatientName) and h.PatientID.startswith("MF") and len(h.PatientBirthDate) == 8 for h in headers)


def test_layouts_are_mixed_and_grouping_is_by_uid(cohort) -> None:
    _result, manifest = cohort
    paths = [Path(p) for paths in manifest["image_paths"] for p in paths]
    assert any(p.suffix == "" for p in paths)
    assert any(p.parent.name.startswith("series_") for p in paths)
    assert any(p.suffix == ".DCM" or " " in p.name for p in paths)
    split_folders = [ps for ps in manifest["image_paths"] if len({Path(p).parent for p in ps}) > 1]
    assert split_folders, "some studies should have their views in different folders"


def test_label_prevalence(cohort) -> None:
    _, manifest = cohort
    for label in ("nodule", "cardiomegaly", "effusion", "fracture"):
        assert 0.2 <= manifest[f"y_{label}"].mean() <= 0.45, label
    assert manifest["y_pneumonia"].sum() == N_STUDIES // 4
    assert not manifest[[f"y_{label}" for label in DEMO_LABELS]].isna().any().any()


def test_splits_are_patient_level(cohort) -> None:
    _, manifest = cohort
    assert manifest.groupby("patient_pseudonym")["split"].nunique().max() == 1
    assert manifest["patient_pseudonym"].nunique() < N_STUDIES  # some patients have several studies
    assert set(manifest["split"]) <= {"train", "val", "test"}
    assert manifest["accession_pseudonym"].str.startswith("acc-").all()


# ------------------------------------------------------------------------------------- determinism


def _relative_manifest(manifest: pd.DataFrame, root: Path) -> pd.DataFrame:
    out = manifest.copy()
    out["image_paths"] = [[str(Path(p).relative_to(root)) for p in ps] for ps in manifest["image_paths"]]
    out["lesion_mask_path"] = [str(Path(p).relative_to(root)) for p in manifest["lesion_mask_path"]]
    return out


def test_same_seed_same_cohort(cohort, tmp_path: Path) -> None:
    result, manifest = cohort
    again = generate_demo_cohort(tmp_path / "again", CONFIG, progress=False)
    other = read_manifest(again.manifest_path)
    first_root, second_root = result.root.resolve(), again.root.resolve()
    assert manifest_hash(_relative_manifest(manifest, first_root)) == manifest_hash(
        _relative_manifest(other, second_root)
    )
    files = sorted(p.relative_to(first_root) for p in first_root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second_root) for p in second_root.rglob("*") if p.is_file())
    for rel in files:
        if rel.name != "manifest.parquet":  # holds absolute paths
            assert (first_root / rel).read_bytes() == (second_root / rel).read_bytes(), rel


def test_regenerating_in_place_is_byte_identical(tmp_path: Path) -> None:
    config = DemoCohortConfig(n_studies=8, image_size=32, seed=3, broken_files=1)
    root = tmp_path / "small"
    generate_demo_cohort(root, config, progress=False)
    before = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    generate_demo_cohort(root, config, labels=list(reversed(DEMO_LABELS)), progress=False)  # any order
    after = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert before == after


def test_other_seed_other_cohort(cohort, tmp_path: Path) -> None:
    _result, manifest = cohort
    other = generate_demo_cohort(tmp_path / "seed1", CONFIG.model_copy(update={"seed": 1}), progress=False)
    assert not set(read_manifest(other.manifest_path)["study_uid"]) & set(manifest["study_uid"])


def test_refuses_other_labels_and_foreign_folders(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fixed labels"):
        generate_demo_cohort(tmp_path / "x", CONFIG, labels=["nodule", "effusion"], progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        generate_demo_cohort(foreign, CONFIG, progress=False)
    assert (foreign / "thesis.tex").read_text() == "keep me"


# --------------------------------------------------------------------------------- text signal


def test_evidence_spans_point_into_the_report(cohort) -> None:
    result, manifest = cohort
    evidence = json.loads((result.root / "evidence.json").read_text())
    texts = dict(zip(manifest["study_uid"], manifest["report_text"], strict=True))
    assert set(evidence) == {uid for uid, text in texts.items() if text}
    for row in manifest.itertuples():
        if not row.report_text:
            continue
        spans = evidence[row.study_uid]["spans"]
        for span in spans:
            assert row.report_text[span["start"] : span["end"]] == span["text"]
        for label in ("effusion", "fracture"):
            asserted = {s["assertion"] for s in spans if s["label"] == label}
            if getattr(row, f"y_{label}") == 1:
                assert asserted & {"positive", "uncertain"} and "negated" not in asserted
            else:
                assert asserted <= {"negated"}
        context = [s for s in spans if s["label"] == "pneumonia"]
        assert all(s["section"] == "INDICATION" for s in context)
        if row.y_pneumonia == 1:
            assert context


def test_image_only_findings_are_never_mentioned(cohort) -> None:
    _, manifest = cohort
    forbidden = re.compile(r"nodul|mass|opacit|cardiomegal|heart|cardiac|silhouette|consolidat", re.IGNORECASE)
    assert not any(forbidden.search(text) for text in manifest["report_text"])


def test_keyword_probe_on_text(cohort) -> None:
    _, manifest = cohort
    keywords = {
        "effusion": ("effusion",),
        "fracture": ("fracture",),
        "nodule": ("nodule", "mass", "opacity", "lesion"),
        "cardiomegaly": ("cardiomegaly", "heart", "cardiac", "enlarged"),
        "pneumonia": ("fever", "febrile", "productive", "wbc", "leukocytosis"),
    }
    auroc = {
        label: roc_auc_score(manifest[f"y_{label}"], [_keyword_score(t, words) for t in manifest["report_text"]])
        for label, words in keywords.items()
    }
    assert auroc["effusion"] > 0.9 and auroc["fracture"] > 0.9, auroc
    assert auroc["nodule"] < 0.65 and auroc["cardiomegaly"] < 0.65, auroc
    # Context alone: at most 5/6 (context-only studies are negatives); missing reports lower it a bit.
    assert 0.7 < auroc["pneumonia"] < 0.9, auroc


# -------------------------------------------------------------------------------- image signal


def test_masks_match_labels_and_image_grid(cohort, frontal) -> None:
    _, manifest = cohort
    for row in manifest.itertuples():
        image, masks, meta = frontal[row.study_uid]
        assert str(masks["sop_uid"]) == meta["sop_uid"]
        for label in ("nodule", "cardiomegaly", "pneumonia"):
            assert (label in masks) == (getattr(row, f"y_{label}") == 1), (row.study_uid, label)
            if label in masks:
                assert masks[label].shape == image.shape and masks[label].dtype == bool and masks[label].any()
        if row.y_pneumonia == 1:
            assert "consolidation" in masks


def test_nodules_are_brighter_than_their_surroundings(cohort, frontal) -> None:
    from scipy.ndimage import binary_dilation

    contrasts = []
    for image, masks, _ in frontal.values():
        if "nodule" in masks:
            inside = masks["nodule"]
            ring = binary_dilation(inside, iterations=3) & ~inside
            contrasts.append(image[inside].mean() - image[ring].mean())
    assert len(contrasts) == round(0.3 * N_STUDIES)
    assert min(contrasts) > 0.0 and np.mean(contrasts) > 0.05, contrasts


def _image_features(image: np.ndarray) -> dict[str, float]:
    """Crude, non-learned image features: heart region contrast, lower vs upper zones, mean."""
    n = image.shape[0]
    ys, xs = np.mgrid[0:n, 0:n] / n
    centre = np.abs(xs - 0.52)
    heart = (ys > 0.45) & (ys < 0.75) & (centre < 0.22)
    beside = (ys > 0.45) & (ys < 0.75) & (centre > 0.22) & (centre < 0.4)
    lower = (ys > 0.5) & (ys < 0.72) & (np.abs(xs - 0.5) > 0.12) & (np.abs(xs - 0.5) < 0.4)
    upper = (ys > 0.2) & (ys < 0.42) & (np.abs(xs - 0.5) > 0.12) & (np.abs(xs - 0.5) < 0.4)
    return {
        "heart": float(image[heart].mean() - image[beside].mean()),
        "lower": float(image[lower].mean() - image[upper].mean()),
        "mean": float(image.mean()),
    }


def test_image_probes(cohort, frontal) -> None:
    _, manifest = cohort
    features = [_image_features(frontal[uid][0]) for uid in manifest["study_uid"]]

    def auroc(label: str, name: str) -> float:
        return roc_auc_score(manifest[f"y_{label}"], [f[name] for f in features])

    assert auroc("cardiomegaly", "heart") > 0.8
    for label in ("effusion", "fracture"):  # not drawn: every image feature is near chance
        for name in ("heart", "lower", "mean"):
            assert abs(auroc(label, name) - 0.5) < 0.25, (label, name, auroc(label, name))


def test_pneumonia_needs_both_modalities(cohort, frontal) -> None:
    result, manifest = cohort
    evidence = json.loads((result.root / "evidence.json").read_text())
    reported = manifest[manifest["report_text"] != ""]
    patch = np.array([float("consolidation" in frontal[uid][1]) for uid in reported["study_uid"]])
    context = np.array(
        [float(any(s["label"] == "pneumonia" for s in evidence[uid]["spans"])) for uid in reported["study_uid"]]
    )
    y = reported["y_pneumonia"].to_numpy()
    # Perfect knowledge of one modality: ceiling 5/6 (patch-only or context-only studies are negatives).
    assert 0.75 < roc_auc_score(y, patch) < 0.9
    assert 0.75 < roc_auc_score(y, context) < 0.9
    assert roc_auc_score(y, patch * context) == 1.0


# ---------------------------------------------------------------------------- build_manifest


def test_build_manifest_without_writing_and_without_reports(cohort) -> None:
    result, manifest = cohort
    build = build_manifest(result.root / "dicom", None, result.root / "labels.csv", labels=list(DEMO_LABELS))
    assert build.path is None
    assert set(build.manifest["study_uid"]) == set(manifest["study_uid"])
    assert (build.manifest["report_text"] == "").all()
    assert "lesion_mask_path" not in build.manifest.columns
    assert len(build.rejected) == 3  # the broken files only


def test_label_file_problems(tmp_path: Path) -> None:
    bad = tmp_path / "labels.csv"
    bad.write_text("study_uid,nodule\n1.2.3,1\n1.2.3,0\n1.2.4,maybe\n1.2.5,\n")
    read = read_label_file(bad, ["nodule"])
    rows, rejected = read.rows, read.rejected
    assert rows["1.2.3"] == {"nodule": 1.0} and np.isnan(rows["1.2.5"]["nodule"])
    assert [r.source.rsplit(":", 1)[1] for r in rejected] == ["row 2", "row 3"]
    with pytest.raises(ManifestError, match="lacks column"):
        read_label_file(bad, ["nodule", "fracture"])


def test_unlabelled_studies_and_unknown_label_rows_are_rejected(cohort, tmp_path: Path) -> None:
    result, _ = cohort
    truth = pd.read_csv(result.root / "labels.csv", dtype=str)
    dropped = truth["study_uid"].iloc[0]
    partial = pd.concat([truth.iloc[1:], pd.DataFrame([{"study_uid": "1.2.3.4", **{k: "0" for k in DEMO_LABELS}}])])
    labels_csv = tmp_path / "labels.csv"
    partial.to_csv(labels_csv, index=False)
    shutil.copytree(result.root / "reports", tmp_path / "reports")
    build = build_manifest(
        result.root / "dicom", tmp_path / "reports", labels_csv, labels=list(DEMO_LABELS), verify_pixels=False
    )
    assert dropped not in set(build.manifest["study_uid"])
    reasons = [r.reason for r in build.rejected]
    assert any("no row in the label file" in r for r in reasons)
    assert any("label row for study 1.2.3.4 matches no DICOM study" in r for r in reasons)
    # Without pixel verification, the file with a readable header but no pixel data is not caught.
    assert not any(r.reason == "no pixel data" for r in build.rejected)
