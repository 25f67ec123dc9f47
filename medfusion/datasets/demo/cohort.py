"""``medfusion demo-data``: a seeded synthetic chest-radiograph cohort whose findings are split across
modalities, written as a raw hospital-style archive and turned into a manifest by the data layer.

What lives where (see ``docs/demo_cohort.md`` for the reasoning and the AUROC ceilings):

========================  ===================  =============================================
label                     image                report
========================  ===================  =============================================
``nodule``                bright disc (mask)   never mentioned
``cardiomegaly``          CTR > 0.5 (mask)     never mentioned
``effusion``              nothing              stated / hedged, or negated / omitted
``fracture``              nothing              stated / hedged, or negated / omitted
``pneumonia``             lower-zone patch     infectious context in INDICATION
========================  ===================  =============================================

``pneumonia`` is positive iff the patch AND the infectious context are both present; the two are
allocated independently, a quarter of the studies in each of the four combinations.

Written under ``root``:

* ``dicom/``: CR/DX files in mixed layouts (``study_NNNN/series_N/IMNNNN.dcm``, flat files with odd
  names, files without extension; some lateral views in another folder than their PA view), mixed
  transfer syntaxes, some MONOCHROME1, some multi-frame, some with rescale and window values, and
  ``config.broken_files`` deliberately broken files (truncated, no pixel data, text named ``.dcm``).
* ``reports/diagnostic_reports.ndjson`` and ``reports/bundle_extra.json``: FHIR R5 DiagnosticReports
  (+ ImagingStudy resources), linked by accession number, study UID or ImagingStudy reference; ~5% of
  studies have no report; two reports belong to no study; one study also has a superseded
  preliminary report.
* ``masks/<study_uid>.npz``: lesion masks of the PA image (for a multi-frame file: its ``frame``).
* ``evidence.json``: per study, the report character spans that state or negate each text finding.
* ``labels.csv``: the ground truth per study (the "curated label file").
* ``manifest.parquet`` (built from the files above by :func:`medfusion.ingest.archive.build_manifest`),
  ``rejected.csv`` and ``cohort.json`` (generation settings; marks the folder as a demo cohort).

The same ``config`` (seed included) gives byte-identical files, UIDs included; only
``manifest.parquet`` differs between two output folders (it stores absolute paths).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.uid
from fhir.resources.diagnosticreport import DiagnosticReport
from fhir.resources.imagingstudy import ImagingStudy
from fhir.resources.resource import Resource

from medfusion.config import DemoCohortConfig
from medfusion.datasets.demo.dicom_writer import DicomSpec, write_dicom
from medfusion.datasets.demo.images import (
    Anatomy,
    render_frontal,
    render_lateral,
    sample_anatomy,
)
from medfusion.datasets.demo.reports import GeneratedReport, generate_report
from medfusion.errors import ConfigError
from medfusion.fhir.codes import study_identifier
from medfusion.fhir.write import report_to_fhir, write_fhir_bundle, write_fhir_ndjson
from medfusion.ingest.archive import build_manifest
from medfusion.ingest.records import Rejection
from medfusion.ingest.reports.text import report_from_text
from medfusion.salt import demo_salt

logger = logging.getLogger(__name__)

#: The demo cohort's labels, in model output order.
DEMO_LABELS = ("nodule", "cardiomegaly", "effusion", "fracture", "pneumonia")

#: Prevalence of the independent labels (exact counts: ``round(fraction * n_studies)``).
PREVALENCE = {"nodule": 0.3, "cardiomegaly": 0.3, "effusion": 0.35, "fracture": 0.3}

MARKER = "cohort.json"
NDJSON_NAME = "diagnostic_reports.ndjson"
BUNDLE_NAME = "bundle_extra.json"
_OWNED = ("dicom", "reports", "masks", "evidence.json", "labels.csv", "manifest.parquet", "rejected.csv", MARKER)

_TS = pydicom.uid
#: Transfer syntaxes cycled over the instances (JPEG baseline and deflate are sprinkled in separately).
_TS_CYCLE = (
    _TS.ExplicitVRLittleEndian,
    _TS.ImplicitVRLittleEndian,
    _TS.RLELossless,
    _TS.JPEGLSLossless,
    _TS.JPEG2000Lossless,
)
_MULTIFRAME_FRAMES = 3
_DETECTOR_MM = 430.0

# Fake identities: exist only so that privacy tests can look for them in outputs.
_SURNAMES = (
    "HARTWELL", "OKAFOR", "LINDQVIST", "MORENO", "TANAKA", "KOWALSKI", "NGUYEN", "FITZGERALD", "ABERNATHY",
    "SANTOS", "VOLKOV", "MBEKI", "HALVORSEN", "DUBOIS", "ROSSI", "CHANDRA", "OYELARAN", "BRENNAN", "KESSLER",
    "YILMAZ",
)  # fmt: skip
_GIVEN = {
    "F": ("MARGARET", "AISHA", "INGRID", "LUCIA", "YUKI", "HELENA", "AMARA", "CLAIRE", "NADIA", "ROSA"),
    "M": ("THOMAS", "KWAME", "ERIK", "JAVIER", "KENJI", "PIOTR", "MINH", "OWEN", "RAVI", "LUCAS"),
}


@dataclass(frozen=True)
class DemoCohortResult:
    """What :func:`generate_demo_cohort` produced.

    Attributes:
        root: The cohort folder.
        manifest_path: ``root/manifest.parquet``.
        n_studies: Studies in the manifest.
        rejected: Inputs the data layer rejected (broken DICOM files, reports linking to no study...).
        labels: Label names, in manifest order.
    """

    root: Path
    manifest_path: Path
    n_studies: int
    rejected: list[Rejection]
    labels: list[str]


@dataclass(frozen=True)
class _Patient:
    name: str
    patient_id: str
    birth_date: str
    sex: str


@dataclass
class _Study:
    """Everything decided about one study before anything is drawn or written."""

    index: int
    study_uid: str
    accession: str
    study_date: str
    study_time: str
    patient: _Patient
    labels: dict[str, int]
    patch: bool
    context: bool
    two_views: bool
    multiframe: bool
    monochrome1: bool
    modality: str
    layout: str
    lateral_elsewhere: bool
    rescale: tuple[float, float] | None
    windowed: bool
    report_target: str  # "ndjson" | "bundle" | "none"
    link: str  # "accession" | "uid" | "reference" | "both"
    drawn: dict[str, bool]  # image cue -> drawn (nodule, cardiomegaly, patch); the knobs may hide a finding
    written: dict[str, bool]  # report finding -> written (effusion, fracture, context)


def _uid(seed: int, *parts: object) -> str:
    """A deterministic UUID-derived UID (``2.25.<int>``, name-based UUID of the seed and ``parts``).

    ``pydicom.uid.generate_uid(prefix=None, ...)`` ignores its entropy sources (it returns a random
    UUID), hence this.
    """
    name = "/".join(["medfusion-demo", str(seed), *map(str, parts)])
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, name).int}"


def _exact(rng: np.random.Generator, n: int, fraction: float) -> np.ndarray:
    """Bool flags, exactly ``round(fraction * n)`` of them True (at least one, at most ``n - 1``)."""
    k = min(max(round(fraction * n), 1), n - 1)
    flags = np.zeros(n, dtype=bool)
    flags[rng.permutation(n)[:k]] = True
    return flags


# -------------------------------------------------------------------------------------------- plan


def _patients(rng: np.random.Generator, n: int) -> list[_Patient]:
    ids: set[str] = set()
    patients: list[_Patient] = []
    while len(patients) < n:
        pid = f"MF{int(rng.integers(1_000_000, 10_000_000))}"
        if pid in ids:
            continue
        ids.add(pid)
        sex = "F" if rng.random() < 0.5 else "M"
        name = f"{_SURNAMES[int(rng.integers(len(_SURNAMES)))]}^{_GIVEN[sex][int(rng.integers(10))]}"
        birth = date(1938, 1, 1) + timedelta(days=int(rng.integers(0, 365 * 64)))
        patients.append(_Patient(name, pid, birth.strftime("%Y%m%d"), sex))
    return patients


def _plan(rng: np.random.Generator, config: DemoCohortConfig) -> list[_Study]:
    """Decide every study's labels, identity, acquisition, file layout and report linkage."""
    n, seed = config.n_studies, config.seed
    prevalence = {label: config.prevalence or fraction for label, fraction in PREVALENCE.items()}
    flags = {label: _exact(rng, n, fraction) for label, fraction in prevalence.items()}
    # Pneumonia = patch AND context; each combination gets a quarter of the studies (by default).
    both = n // 4 if config.prevalence is None else min(max(round(config.prevalence * n), 1), n - 1)
    one = n // 4 if config.prevalence is None else (n - both) // 3
    cells = np.array([(1, 1)] * both + [(1, 0)] * one + [(0, 1)] * one + [(0, 0)] * (n - both - 2 * one))
    cells = cells[rng.permutation(n)]
    two_views = rng.random(n) < 0.35
    multiframe = _exact(rng, n, 0.06)
    monochrome1 = _exact(rng, n, 0.15)
    without_report = _exact(rng, n, 0.05)

    cues = _cue_plan(config)
    patients = _patients(rng, max(2, round(n * 0.7)))
    owner = np.concatenate([rng.permutation(len(patients)), rng.integers(0, len(patients), n)])[:n]
    accessions: set[str] = set()
    studies = []
    for i in range(n):
        while (acc := f"ACC{int(rng.integers(10_000_000, 100_000_000))}") in accessions:
            pass
        accessions.add(acc)
        day = date(2018, 1, 1) + timedelta(days=int(rng.integers(0, 365 * 6)))
        seconds = int(rng.integers(7 * 3600, 20 * 3600))
        layout = str(rng.choice(("nested", "flat", "noext"), p=(0.5, 0.25, 0.25)))
        rescale = None
        if rng.random() < 0.3:
            rescale = (float(rng.choice((0.5, 1.0, 2.0))), float(rng.choice((-1024.0, 0.0, 100.0))))
        link = str(rng.choice(("accession", "uid", "reference", "both"), p=(0.65, 0.12, 0.15, 0.08)))
        target = "none" if without_report[i] else ("bundle" if rng.random() < 0.12 else "ndjson")
        patch, context = bool(cells[i][0]), bool(cells[i][1])
        labels = {label: int(flags[label][i]) for label in PREVALENCE}
        labels["pneumonia"] = int(patch and context)
        drawn, written = cues(i, labels, patch, context)
        studies.append(
            _Study(
                index=i,
                study_uid=_uid(seed, "study", i),
                accession=acc,
                study_date=day.strftime("%Y%m%d"),
                study_time=f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}",
                patient=patients[int(owner[i])],
                labels=labels,
                patch=patch,
                context=context,
                two_views=bool(two_views[i]),
                multiframe=bool(multiframe[i]),
                monochrome1=bool(monochrome1[i]),
                modality="CR" if rng.random() < 0.5 else "DX",
                layout=layout,
                lateral_elsewhere=bool(layout == "nested" and rng.random() < 0.3),
                rescale=rescale,
                windowed=bool(rng.random() < 0.4),
                report_target=target,
                link=link,
                drawn=drawn,
                written=written,
            )
        )
    return studies


def _cue_plan(config: DemoCohortConfig) -> Any:
    """``cues(i, labels, patch, context) -> (drawn, written)``: which findings the knobs let show.

    With the defaults every finding shows and nothing is drawn from any generator; otherwise the
    ``image_signal`` / ``text_signal`` coins come from their own generator (seed, 4), so the plan
    itself (labels, identities, files) is the same as without the knobs.
    """
    image = set(config.image_findings if config.image_findings is not None else ("nodule", "cardiomegaly", "pneumonia"))
    text = set(config.text_findings if config.text_findings is not None else ("effusion", "fracture", "pneumonia"))
    coins = np.random.default_rng([config.seed, 4]).random((config.n_studies, 2))  # (n, image/text)

    def cues(i: int, labels: dict[str, int], patch: bool, context: bool) -> tuple[dict[str, bool], dict[str, bool]]:
        show_image = bool(coins[i, 0] < config.image_signal)
        show_text = bool(coins[i, 1] < config.text_signal)
        drawn = {
            "nodule": bool(labels["nodule"]) and "nodule" in image and show_image,
            "cardiomegaly": bool(labels["cardiomegaly"]) and "cardiomegaly" in image and show_image,
            "patch": patch and "pneumonia" in image and show_image,
        }
        written = {
            "effusion": bool(labels["effusion"]) and "effusion" in text and show_text,
            "fracture": bool(labels["fracture"]) and "fracture" in text and show_text,
            "context": context and "pneumonia" in text and show_text,
        }
        return drawn, written

    return cues


def _transfer_syntax(counter: int) -> str:
    """The transfer syntax of the ``counter``-th instance written."""
    if counter % 15 == 7:
        return _TS.JPEGBaseline8Bit
    if counter % 23 == 11:
        return _TS.DeflatedExplicitVRLittleEndian
    return _TS_CYCLE[counter % len(_TS_CYCLE)]


# ----------------------------------------------------------------------------------- file writing


class _Names:
    """Unique odd file names for flat layouts."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._used: set[str] = set()

    def token(self) -> str:
        while (tok := f"{int(self._rng.integers(0, 16**8)):08x}") in self._used:
            pass
        self._used.add(tok)
        return tok

    def flat(self, n: int) -> str:
        style = int(self._rng.integers(3))
        tok = self.token()
        return (f"{tok.upper()}.DCM", f"IMG {n:03d} (copy {tok[:3]}).dcm", f"scan_{tok}..dcm")[style]

    def numeric(self) -> str:
        while (name := str(int(self._rng.integers(10**7, 10**8)))) in self._used:
            pass
        self._used.add(name)
        return name


def _relative_path(study: _Study, series: int, names: _Names, *, lateral: bool) -> Path:
    """Where an instance goes under ``dicom/``: its study's layout, or ``misc/`` for a displaced lateral."""
    if lateral and study.lateral_elsewhere:
        return Path("misc") / names.token()
    if study.layout == "nested":
        return Path(f"study_{study.index:04d}") / f"series_{series}" / "IM0001.dcm"
    if study.layout == "flat":
        return Path("incoming") / names.flat(study.index)
    return Path("export") / names.numeric()


def _stored_values(
    images: np.ndarray, rng: np.random.Generator, *, monochrome1: bool, eight_bit: bool
) -> tuple[np.ndarray, int, tuple[float, float]]:
    """Display images in [0, 1] -> stored integers, bits stored, and the (lo, hi) stored range used."""
    if eight_bit:
        stored = np.rint(images * 255.0).astype(np.int32)
        lo, hi, bits = 0.0, 255.0, 8
    else:
        span = float(rng.uniform(2800.0, 4000.0))
        lo = float(rng.uniform(0.0, 4095.0 - span))
        hi, bits = lo + span, 12
        stored = np.rint(lo + images * span).astype(np.int32)
    if monochrome1:
        top = 255 if eight_bit else 4095
        stored = top - stored
        lo, hi = top - hi, top - lo
    return stored, bits, (lo, hi)


def _pin_content_time(path: Path, time: str) -> None:
    """Make the file reproducible: the writer stamps ContentTime with the clock; use the study time."""
    ds = pydicom.dcmread(path)
    ds.StudyTime = time
    ds.ContentTime = time
    ds.save_as(path, enforce_file_format=True)


def _render_views(
    study: _Study, size: int, rng: np.random.Generator
) -> tuple[list[tuple[str, int, np.ndarray]], dict[str, np.ndarray]]:
    """Draw the study: ``[(view, series number, image in [0, 1])]`` and the PA view's masks.

    A multi-frame PA file holds three renders shifted by about two pixels; the middle frame is
    unshifted and is the one the masks belong to.
    """
    anatomy: Anatomy = sample_anatomy(
        rng,
        nodule=study.drawn["nodule"],
        cardiomegaly=study.drawn["cardiomegaly"],
        consolidation=study.drawn["patch"],
    )
    if study.multiframe:
        d = 4.0 / size
        frames = [
            render_frontal(anatomy, size, rng, offset=offset) for offset in ((-d, d / 2), (0.0, 0.0), (d, -d / 2))
        ]
        frontal = np.stack([frame.image for frame in frames])  # (frames, rows, cols)
        masks = frames[_MULTIFRAME_FRAMES // 2].masks
    else:
        single = render_frontal(anatomy, size, rng)
        frontal, masks = single.image, single.masks  # (rows, cols)
    views = [("PA", 1, frontal)]
    if study.two_views:
        views.append(("LL", 2, render_lateral(anatomy, size, rng).image))
    return views, masks


def _spec(study: _Study, view: str, series: int, ts: str, bits: int, window: tuple, size: int, seed: int) -> DicomSpec:
    """The header of one instance."""
    return DicomSpec(
        study_uid=study.study_uid,
        series_uid=_uid(seed, "series", study.index, series),
        sop_uid=_uid(seed, "instance", study.index, series),
        modality=study.modality,
        photometric="MONOCHROME1" if study.monochrome1 else "MONOCHROME2",
        transfer_syntax=ts,
        bits_stored=bits,
        rescale_slope=study.rescale[0] if study.rescale else None,
        rescale_intercept=study.rescale[1] if study.rescale else None,
        window_center=window[0],
        window_width=window[1],
        view_position=view,
        body_part="CHEST",
        patient_name=study.patient.name,
        patient_id=study.patient.patient_id,
        patient_birth_date=study.patient.birth_date,
        patient_sex=study.patient.sex,
        accession_number=study.accession,
        study_date=study.study_date,
        instance_number=1,
        pixel_spacing=(round(_DETECTOR_MM / size, 4),) * 2,
    )


def _write_study_images(
    study: _Study, dicom_root: Path, size: int, rng: np.random.Generator, names: _Names, counter: list[int], seed: int
) -> dict[str, np.ndarray]:
    """Render and write a study's images; return the arrays of its ``masks/<study_uid>.npz``."""
    views, masks = _render_views(study, size, rng)
    for view, series, image in views:
        ts = _transfer_syntax(counter[0])
        if ts == _TS.JPEGBaseline8Bit and image.ndim == 3:
            ts = _TS.ExplicitVRLittleEndian
        counter[0] += 1
        stored, bits, (lo, hi) = _stored_values(
            image, rng, monochrome1=study.monochrome1, eight_bit=ts == _TS.JPEGBaseline8Bit
        )
        window: tuple[float | None, float | None] = (None, None)
        if study.windowed:  # a window just wider than the stored range, in rescaled units
            slope, intercept = study.rescale if study.rescale else (1.0, 0.0)
            low, high = sorted((slope * lo + intercept, slope * hi + intercept))
            window = (round((low + high) / 2.0, 1), round((high - low) * float(rng.uniform(1.0, 1.15)), 1))
        path = dicom_root / _relative_path(study, series, names, lateral=view == "LL")
        write_dicom(path, stored, _spec(study, view, series, ts, bits, window, size, seed))
        _pin_content_time(path, study.study_time)
    record = dict(masks)
    if study.labels["pneumonia"] and "consolidation" in masks:  # a hidden patch (image_signal) has no mask
        record["pneumonia"] = masks["consolidation"]
    record["sop_uid"] = np.array(_uid(seed, "instance", study.index, 1))
    record["frame"] = np.array(_MULTIFRAME_FRAMES // 2 if study.multiframe else 0)
    return record


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed`` but with fixed zip timestamps, so the bytes are reproducible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asanyarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())


def _write_broken_files(dicom_root: Path, count: int, size: int, seed: int, rng: np.random.Generator) -> list[Path]:
    """Write ``count`` deliberately unusable files: truncated, without pixel data, not DICOM at all."""
    paths: list[Path] = []
    for k in range(count):
        kind = ("truncated", "no_pixel_data", "not_dicom")[k % 3]
        spec = DicomSpec(
            study_uid=_uid(seed, "broken-study", k),
            series_uid=_uid(seed, "broken-series", k),
            sop_uid=_uid(seed, "broken-instance", k),
            modality="CR",
            patient_name="BROKEN^FILE",
            patient_id=f"MFX{k:04d}",
            study_date="20200101",
        )
        pixels = rng.integers(0, 4096, size=(size, size))
        if kind == "truncated":
            path = dicom_root / "incoming" / f"partial_transfer_{k}.dcm"
            write_dicom(path, pixels, spec)
            _pin_content_time(path, "120000")
            data = path.read_bytes()
            path.write_bytes(data[: int(len(data) * 0.6)])
        elif kind == "no_pixel_data":
            path = dicom_root / f"study_broken_{k}" / f"NOPIXELS{k}"
            write_dicom(path, pixels, spec)
            ds = pydicom.dcmread(path)
            del ds.PixelData
            ds.StudyTime = ds.ContentTime = "120000"
            ds.save_as(path, enforce_file_format=True)
        else:
            path = dicom_root / "incoming" / f"scan_notes_{k}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("Scanner export notes: 3 studies re-sent after network outage.\n", encoding="utf-8")
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------------ reports


def _report_resources(
    study: _Study, generated: GeneratedReport, *, status: str = "final", suffix: str = ""
) -> list[Resource]:
    """The DiagnosticReport (and the ImagingStudy it references, if any) of one study."""
    report = report_from_text(generated.text, source=f"demo study {study.index}", status=status)
    accession = study.accession if study.link in ("accession", "both") else None
    study_uid = study.study_uid if study.link in ("uid", "both") else None
    imaging_id = f"imaging-{study.index:04d}" if study.link == "reference" else None
    resource = report_to_fhir(
        report,
        accession=accession,
        study_uid=study_uid,
        study_reference_to=f"ImagingStudy/{imaging_id}" if imaging_id else None,
        patient_reference=f"Patient/{study.patient.patient_id}",
        resource_id=f"report-{study.index:04d}{suffix}",
    )
    if imaging_id is None:
        return [resource]
    imaging = ImagingStudy.model_validate(
        {
            "resourceType": "ImagingStudy",
            "id": imaging_id,
            "status": "available",
            "identifier": [study_identifier(study.study_uid)],
            "subject": {"reference": f"Patient/{study.patient.patient_id}"},
            "numberOfSeries": 1 + int(study.two_views),
            "numberOfInstances": 1 + int(study.two_views),
            "modality": [
                {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": study.modality}]}
            ],
        }
    )
    return [imaging, resource]


def _orphan_resources(rng: np.random.Generator, k: int, used: set[str]) -> DiagnosticReport:
    """A report whose accession number belongs to no study of the archive."""
    while (acc := f"ACC{int(rng.integers(10_000_000, 100_000_000))}") in used:
        pass
    generated = generate_report(rng, effusion=False, fracture=False, infectious_context=False, two_views=False)
    report = report_from_text(generated.text, source=f"demo orphan {k}")
    return report_to_fhir(report, accession=acc, resource_id=f"report-orphan-{k}")


def _write_reports(
    root: Path, studies: list[_Study], reports: dict[int, GeneratedReport], rng: np.random.Generator
) -> list[Path]:
    ndjson: list[Resource] = []
    bundle: list[Resource] = []
    with_report = [s for s in studies if s.report_target != "none"]
    superseded = with_report[len(with_report) // 2] if len(with_report) >= 20 else None
    for study in with_report:
        target = ndjson if study.report_target == "ndjson" else bundle
        if study is superseded:
            # A preliminary read sent before the final one: linkage keeps the final, rejects this.
            target.extend(_report_resources(study, reports[study.index], status="preliminary", suffix="-prelim"))
        target.extend(_report_resources(study, reports[study.index]))
    used = {s.accession for s in studies}
    ndjson.append(_orphan_resources(rng, 0, used))
    bundle.append(_orphan_resources(rng, 1, used))
    folder = root / "reports"
    return [write_fhir_ndjson(ndjson, folder / NDJSON_NAME), write_fhir_bundle(bundle, folder / BUNDLE_NAME)]


# --------------------------------------------------------------------------------------------- main


@contextmanager
def _progress(enabled: bool, total: int, description: str) -> Iterator[Any]:
    """A rich progress bar (or a no-op when disabled); yields a callable advancing it by one."""
    if not enabled:
        yield lambda: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)


@contextmanager
def _quiet_codec_logs() -> Iterator[None]:
    """Silence the JPEG 2000 encoder's per-image INFO lines ("tile number 1 / 1") while writing."""
    codec_logger = logging.getLogger("openjpeg")
    level = codec_logger.level
    codec_logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        codec_logger.setLevel(level)


def _prepare_root(root: Path) -> None:
    """Create ``root``, or clear a previous demo cohort in it; refuse any other non-empty folder."""
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root}: demo cohort output exists and is not a folder")
    if root.is_dir() and any(root.iterdir()):
        if not (root / MARKER).is_file():
            raise ConfigError(
                f"{root}: folder is not empty and holds no demo cohort ({MARKER}); choose an empty folder"
            )
        for name in _OWNED:
            target = root / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    root.mkdir(parents=True, exist_ok=True)


def _write_labels(path: Path, studies: list[_Study]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["study_uid", *DEMO_LABELS])
        for study in studies:
            writer.writerow([study.study_uid, *(study.labels[label] for label in DEMO_LABELS)])


def _write_rejected(path: Path, rejected: list[Rejection], root: Path) -> None:
    """``rejected.csv``, paths under ``root`` made relative to it (in sources and reasons alike)."""
    prefixes = sorted({str(root.resolve()) + "/", str(root) + "/"}, key=len, reverse=True)

    def relative(text: str) -> str:
        for prefix in prefixes:
            text = text.replace(prefix, "")
        return text

    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["source", "reason"])
        for item in rejected:
            writer.writerow([relative(str(item.source)), relative(item.reason)])


@demo_salt()  # invented patients: the public demo salt gives the same pseudonyms and splits on every machine
def generate_demo_cohort(
    root: str | Path, config: DemoCohortConfig, *, labels: list[str] | None = None, progress: bool = True
) -> DemoCohortResult:
    """Generate the synthetic demo cohort under ``root`` and build its manifest.

    Its pseudonyms use the public demo salt (:func:`medfusion.salt.demo_salt`), on purpose and only
    here: the patients are invented, and the fixed salt keeps the patient-level splits (and the
    figures in ``docs/demo_cohort.md``) identical on every machine, with no site salt to set up.

    Args:
        root: Output folder; created if missing. An existing demo cohort there is replaced; any
            other non-empty folder is refused.
        config: Size, image side, seed and number of broken files.
        labels: The run's labels: the labels of :data:`DEMO_LABELS`, in any order (the manifest's
            columns follow :data:`DEMO_LABELS`). None means :data:`DEMO_LABELS`.
        progress: Show a progress bar.

    Returns:
        The :class:`DemoCohortResult`.

    Raises:
        ConfigError: ``labels`` differ from :data:`DEMO_LABELS`, or ``root`` is a non-empty folder
            that is not a demo cohort.
    """
    if labels is not None and sorted(labels) != sorted(DEMO_LABELS):
        raise ConfigError(
            f"the demo cohort has the fixed labels {list(DEMO_LABELS)}; the configuration asks for {list(labels)}"
        )
    root = Path(root)
    _prepare_root(root)
    marker = {
        "generator": "medfusion demo-data",
        "seed": config.seed,
        "n_studies": config.n_studies,
        "image_size": config.image_size,
        "broken_files": config.broken_files,
        "labels": list(DEMO_LABELS),
    }
    knobs = ("image_signal", "text_signal", "image_findings", "text_findings", "prevalence")
    defaults = DemoCohortConfig()
    marker.update({k: getattr(config, k) for k in knobs if getattr(config, k) != getattr(defaults, k)})
    (root / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")  # first: marks the folder
    rng = np.random.default_rng(config.seed)
    studies = _plan(rng, config)
    image_rngs = rng.spawn(len(studies))  # separate streams: the text cannot depend on image draws
    report_rngs = rng.spawn(len(studies))
    names = _Names(np.random.default_rng([config.seed, 1]))
    dicom_root = root / "dicom"
    counter = [0]
    reports: dict[int, GeneratedReport] = {}
    evidence: dict[str, Any] = {}
    with _quiet_codec_logs(), _progress(progress, len(studies), "demo cohort: studies") as advance:
        for study, image_rng, report_rng in zip(studies, image_rngs, report_rngs, strict=True):
            mask_record = _write_study_images(
                study, dicom_root, config.image_size, image_rng, names, counter, config.seed
            )
            _write_npz(root / "masks" / f"{study.study_uid}.npz", mask_record)
            generated = generate_report(
                report_rng,
                effusion=study.written["effusion"],
                fracture=study.written["fracture"],
                infectious_context=study.written["context"],
                two_views=study.two_views,
            )
            if study.report_target != "none":
                reports[study.index] = generated
                evidence[study.study_uid] = {
                    "report_id": f"report-{study.index:04d}",
                    "spans": [span.to_dict() for span in generated.evidence],
                }
            advance()
    _write_broken_files(
        dicom_root, config.broken_files, config.image_size, config.seed, np.random.default_rng([config.seed, 2])
    )
    report_paths = _write_reports(root, studies, reports, np.random.default_rng([config.seed, 3]))
    (root / "evidence.json").write_text(json.dumps(evidence, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    labels_csv = root / "labels.csv"
    _write_labels(labels_csv, studies)
    build = build_manifest(
        dicom_root,
        report_paths,
        labels_csv,
        labels=list(DEMO_LABELS),
        seed=config.seed,
        val_fraction=0.2,
        test_fraction=0.2,
        out=root / "manifest.parquet",
        masks_dir=root / "masks",
        progress=progress,
    )
    _write_rejected(root / "rejected.csv", build.rejected, root)
    logger.info(
        "demo cohort %s: %d studies (%d instances), %d rejected input(s); synthetic patients, pseudonymised "
        "with the public demo salt",
        root,
        len(build.manifest),
        counter[0],
        len(build.rejected),
    )
    return DemoCohortResult(
        root=root,
        manifest_path=root / "manifest.parquet",
        n_studies=len(build.manifest),
        rejected=list(build.rejected),
        labels=list(DEMO_LABELS),
    )
