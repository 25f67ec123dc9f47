"""DicomwebSource against a real Orthanc PACS holding the demo cohort: same studies, same pixels and
same predictions as the folder, typed errors for wrong credentials and unreachable servers."""

from __future__ import annotations

import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pydicom.uid
import pytest
import torch

from medfusion.errors import DicomReadError, InputRejected
from medfusion.inference import Predictor, StudyInput
from medfusion.ingest.dicom.read import read_dicom
from medfusion.ingest.dicom.studies import DicomScan, scan_dicom_folder
from medfusion.scoring.dicomweb import PASSWORD_ENV, USER_ENV, DicomwebSource
from medfusion.scoring.sources import FolderSource, StudyRef
from tests.scoring.orthanc_server import OrthancServer, free_port, running_orthanc

REPORT = "FINDINGS: Heart size is normal. The lungs are clear. IMPRESSION: No acute disease."


@dataclass(frozen=True)
class Pacs:
    """Orthanc holding the demo cohort.

    Attributes:
        server: The running Orthanc.
        scan: The folder scan of the cohort's DICOM files.
        stored: Paths of the files Orthanc stored.
        refused: ``(path, reason)`` of the files Orthanc refused.
    """

    server: OrthancServer
    root: Path
    scan: DicomScan
    stored: frozenset[str]
    refused: tuple[tuple[Path, str], ...]

    def source(self, **kwargs) -> DicomwebSource:
        return DicomwebSource(
            self.server.dicomweb_url, username=self.server.username, password=self.server.password, **kwargs
        )

    def stored_paths(self, study_uid: str) -> list[Path]:
        return [p for p in self.scan.studies[study_uid].paths if str(p) in self.stored]

    @property
    def stored_studies(self) -> set[str]:
        return {uid for uid in self.scan.studies if self.stored_paths(uid)}


@pytest.fixture(scope="module")
def pacs(orthanc: OrthancServer, demo_project) -> Pacs:
    """Upload every file of the demo cohort that the folder scan accepts (``POST /instances``)."""
    root = demo_project.cohort_dir / "dicom"
    scan = scan_dicom_folder(root)
    result = orthanc.upload(p for study in scan.studies.values() for p in study.paths)
    return Pacs(orthanc, root, scan, frozenset(str(p) for p in result.stored), tuple(result.refused))


@pytest.fixture(scope="module")
def materialized(pacs: Pacs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Every study of the PACS retrieved over WADO-RS, one folder per study."""
    source = pacs.source()
    root = tmp_path_factory.mktemp("wado")
    return {ref.study_uid: source.materialize(ref, root / f"s{i}") for i, ref in enumerate(source.discover())}


def _sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)


def test_orthanc_refuses_only_files_we_cannot_decode(pacs: Pacs) -> None:
    assert len(pacs.stored) > 200
    for path, reason in pacs.refused:  # the demo's truncated transfer
        assert reason.startswith("HTTP 4"), (path, reason)
        with pytest.raises(DicomReadError):
            read_dicom(path)


def test_discover_lists_the_archive_with_accession_pseudonyms_like_the_folder(pacs: Pacs) -> None:
    refs = list(pacs.source(page_size=37).discover())  # 161 studies: 5 QIDO pages
    uids = [ref.study_uid for ref in refs]
    assert len(uids) == len(set(uids)) == len(pacs.stored_studies) > 150
    assert set(uids) == pacs.stored_studies
    folder = {ref.study_uid: ref for ref in FolderSource(pacs.root).discover()}
    for ref in refs:
        assert ref.locator == ()
        assert ref.report_key == pacs.scan.studies[ref.study_uid].accession_pseudonym
    assert sum(ref.report_key is not None for ref in refs) > 100  # most demo studies carry an accession number
    assert all(folder[ref.study_uid].report_key == ref.report_key for ref in refs)


def test_materialized_files_keep_transfer_syntax_and_pixels(pacs: Pacs, materialized: dict[str, list[Path]]) -> None:
    syntaxes: set[str] = set()
    undecodable = 0
    for study_uid, paths in materialized.items():
        originals = {_sop_uid(p): p for p in pacs.stored_paths(study_uid)}
        assert sorted(_sop_uid(p) for p in paths) == sorted(originals)
        for path in paths:
            original = originals[_sop_uid(path)]
            assert pydicom.dcmread(path, stop_before_pixels=True).preamble is not None  # Part-10 file
            try:
                expected = read_dicom(original)
            except DicomReadError:  # the demo's file without pixel data: same failure over DICOMweb
                undecodable += 1
                with pytest.raises(DicomReadError):
                    read_dicom(path)
                continue
            got = read_dicom(path)
            assert got.meta["transfer_syntax"] == expected.meta["transfer_syntax"]
            assert torch.equal(got.pixels, expected.pixels)
            syntaxes.add(got.meta["transfer_syntax"])
    assert undecodable <= 1
    # native, deflated, RLE, JPEG baseline, JPEG-LS, JPEG 2000: all retrieved as stored
    assert {"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.50"} <= syntaxes
    assert len(syntaxes) >= 6


def test_predictions_over_dicomweb_equal_the_folder(
    pacs: Pacs, materialized: dict[str, list[Path]], demo_project
) -> None:
    torch.set_num_threads(1)
    predictor = Predictor.from_dir(demo_project.model_dir, device="cpu")
    uids = sorted(materialized)
    folder = predictor.predict([StudyInput([str(p) for p in pacs.stored_paths(u)], REPORT) for u in uids])
    dicomweb = predictor.predict([StudyInput([str(p) for p in materialized[u]], REPORT) for u in uids])
    scored = 0
    for uid, a, b in zip(uids, folder, dicomweb, strict=True):
        assert (a.error is None) == (b.error is None), uid
        if a.error is None:
            np.testing.assert_allclose(b.probabilities, a.probabilities, rtol=0, atol=1e-6)
            assert np.array_equal(a.decisions, b.decisions)
            scored += 1
    assert scored >= len(uids) - 1 > 150


def test_source_pickles_into_workers_and_reads_credentials_from_env(
    pacs: Pacs, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(USER_ENV, pacs.server.username)
    monkeypatch.setenv(PASSWORD_ENV, pacs.server.password)
    source = DicomwebSource(pacs.server.dicomweb_url + "/")
    ref = next(iter(source.discover()))
    monkeypatch.delenv(USER_ENV)
    monkeypatch.delenv(PASSWORD_ENV)
    clone = pickle.loads(pickle.dumps(source))  # what a worker process gets
    paths = clone.materialize(ref, tmp_path / "study")
    assert sorted(_sop_uid(p) for p in paths) == sorted(_sop_uid(p) for p in pacs.stored_paths(ref.study_uid))
    assert pacs.server.password not in repr(source)


def test_wrong_password_is_a_clear_typed_error(pacs: Pacs, tmp_path: Path) -> None:
    source = DicomwebSource(pacs.server.dicomweb_url, username=pacs.server.username, password="not-the-password")
    with pytest.raises(InputRejected) as caught:
        next(iter(source.discover()))
    assert caught.value.source == f"{pacs.server.dicomweb_url}/studies"
    assert "HTTP 401" in caught.value.reason and USER_ENV in caught.value.reason
    assert "not-the-password" not in str(caught.value)
    any_uid = next(iter(pacs.stored_studies))
    with pytest.raises(InputRejected, match="HTTP 401"):
        source.materialize(StudyRef(any_uid, (), None), tmp_path / "study")
    assert not list((tmp_path / "study").iterdir())


def test_unknown_study_is_rejected_with_its_url(pacs: Pacs, tmp_path: Path) -> None:
    with pytest.raises(InputRejected, match="HTTP 404") as caught:
        pacs.source().materialize(StudyRef("1.2.3.999", (), None), tmp_path)
    assert caught.value.source.endswith("/studies/1.2.3.999")


def test_unreachable_server_is_retried_a_bounded_number_of_times() -> None:
    source = DicomwebSource(f"http://127.0.0.1:{free_port()}/dicom-web", max_attempts=3, backoff_s=0.01, timeout=2)
    with pytest.raises(InputRejected, match=r"cannot connect to the server \(after 3 attempts\)"):
        list(source.discover())


def test_credentials_in_the_url_are_refused() -> None:
    with pytest.raises(InputRejected, match="credentials in the URL") as caught:
        DicomwebSource("http://alice:secret@127.0.0.1:8042/dicom-web")
    assert "secret" not in str(caught.value)


def _non_image_copy(path: Path, out: Path) -> Path:
    """A copy of a DICOM file turned into a non-image instance (no Rows/Columns) of a new study."""
    ds = pydicom.dcmread(path)
    for keyword in ("Rows", "Columns", "PixelData"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.StudyInstanceUID = pydicom.uid.generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(out, enforce_file_format=True)
    return out


def test_broken_and_non_image_instances_fail_as_in_a_folder(demo_project, tmp_path: Path) -> None:
    """On a fresh PACS: Orthanc refuses the demo's truncated and non-DICOM files; the study whose
    only file has no pixel data is listed and retrieved, then fails at decode (as in a folder); a study
    with no image instance at all is rejected at retrieval, naming its URL."""
    broken = sorted(
        p
        for p in (demo_project.cohort_dir / "dicom").rglob("*")
        if p.name.startswith(("partial_transfer", "NOPIXELS", "scan_notes"))
    )
    no_pixels = [p for p in broken if p.name.startswith("NOPIXELS")]
    assert len(broken) == 3 and len(no_pixels) == 1
    non_image = _non_image_copy(no_pixels[0], tmp_path / "non_image.dcm")
    with running_orthanc(tmp_path / "orthanc") as server:
        result = server.upload([*broken, non_image])
        assert sorted(p.name for p in result.stored) == sorted([no_pixels[0].name, non_image.name])
        source = DicomwebSource(server.dicomweb_url, username=server.username, password=server.password)
        refs = {ref.study_uid: ref for ref in source.discover()}
        assert len(refs) == 2
        no_pixels_uid = str(pydicom.dcmread(no_pixels[0], stop_before_pixels=True).StudyInstanceUID)
        [paths] = [source.materialize(refs.pop(no_pixels_uid), tmp_path / "a")]
        with pytest.raises(DicomReadError, match="no pixel data"):
            read_dicom(paths[0])
        [non_image_ref] = refs.values()
        with pytest.raises(InputRejected, match="no usable image instance") as caught:
            source.materialize(non_image_ref, tmp_path / "b")
        assert caught.value.source == f"{server.dicomweb_url}/studies/{non_image_ref.study_uid}"


def _subset_folder(pacs: Pacs, out: Path, n_studies: int) -> Path:
    """Copy the files of ``n_studies`` stored studies (the demo's no-pixel study among them) to ``out``."""
    no_pixels = {
        uid for uid in pacs.stored_studies if any(p.name.startswith("NOPIXELS") for p in pacs.stored_paths(uid))
    }
    chosen = sorted(no_pixels) + sorted(pacs.stored_studies - no_pixels)[: n_studies - len(no_pixels)]
    for uid in chosen:
        for path in pacs.stored_paths(uid):
            target = out / path.relative_to(pacs.root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return out


def test_scoring_job_over_dicomweb_equals_the_folder(
    pacs: Pacs, demo_project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole job (ledger, worker process, reports linked by accession pseudonym, Parquet) on 40
    studies from a folder and from a PACS holding the same files: same studies scored, same
    probabilities and decisions, the same study dead-lettered for the same reason."""
    from medfusion.scoring import read_results
    from medfusion.scoring.job import ScoreOptions, run_score

    folder_root = _subset_folder(pacs, tmp_path / "archive", 40)
    common = {
        "model": demo_project.model_uri,
        "tracking_uri": demo_project.tracking_uri,
        "reports": demo_project.cohort_dir / "reports",
        "workers": 1,
        "device": "cpu",
    }
    folder = run_score(ScoreOptions(source=str(folder_root), out_dir=tmp_path / "folder", **common))
    with running_orthanc(tmp_path / "orthanc") as server:
        uploaded = server.upload(sorted(p for p in folder_root.rglob("*") if p.is_file()))
        assert not uploaded.refused
        monkeypatch.setenv(USER_ENV, server.username)
        monkeypatch.setenv(PASSWORD_ENV, server.password)
        web = run_score(ScoreOptions(source=server.dicomweb_url, out_dir=tmp_path / "web", **common))

    assert (web.discovered, web.scored, web.failed, web.pending) == (folder.discovered, folder.scored, folder.failed, 0)
    assert web.rejected_by_reason == folder.rejected_by_reason == {"no pixel data": 1}
    a = read_results(tmp_path / "folder").set_index("study_uid").sort_index()
    b = read_results(tmp_path / "web").set_index("study_uid").sort_index()
    assert list(b.index) == list(a.index) and len(a) == 39
    prob_columns = [c for c in a.columns if c.startswith("prob_")]
    decision_columns = [c for c in a.columns if c.startswith("decision_")]
    assert prob_columns and decision_columns
    np.testing.assert_allclose(b[prob_columns].to_numpy(float), a[prob_columns].to_numpy(float), rtol=0, atol=1e-6)
    assert (b[decision_columns].to_numpy() == a[decision_columns].to_numpy()).all()


def test_scoring_job_with_a_wrong_password_stops_with_a_typed_error(pacs: Pacs, demo_project, tmp_path: Path) -> None:
    from medfusion.scoring.job import ScoreOptions, run_score

    source = DicomwebSource(pacs.server.dicomweb_url, username=pacs.server.username, password="wrong-password")
    options = ScoreOptions(
        source=source,
        out_dir=tmp_path / "out",
        model=demo_project.model_uri,
        tracking_uri=demo_project.tracking_uri,
        workers=1,
        device="cpu",
    )
    with pytest.raises(InputRejected, match="HTTP 401 Unauthorized") as caught:
        run_score(options)
    assert "wrong-password" not in str(caught.value)


def test_cli_with_a_wrong_password_prints_one_clear_line(
    pacs: Pacs, demo_project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from medfusion.cli import app

    monkeypatch.setenv(USER_ENV, pacs.server.username)
    monkeypatch.setenv(PASSWORD_ENV, "wrong-password")
    args = ["score", pacs.server.dicomweb_url, "--out", str(tmp_path / "out"), "--model", str(demo_project.model_dir)]
    result = CliRunner().invoke(app, [*args, "--device", "cpu", "--workers", "1", "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "HTTP 401 Unauthorized" in result.output and USER_ENV in result.output
    assert "Traceback" not in result.output and "wrong-password" not in result.output
