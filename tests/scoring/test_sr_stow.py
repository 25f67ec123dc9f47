"""``score --sr --stow``: each study's SR stored in a real Orthanc (DICOMweb STOW-RS), read back over
QIDO-RS / WADO-RS from the right study with the right values and provenance; a failed send is recorded
in the ledger and re-sent by the next run; re-sending stores nothing twice."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
import requests
from dicomweb_client import DICOMwebClient

from medfusion.ingest.dicom.studies import scan_dicom_folder
from medfusion.scoring import read_results
from medfusion.scoring.dicomweb import PASSWORD_ENV, USER_ENV
from tests.scoring.orthanc_server import OrthancServer, free_port, running_orthanc
from tests.support.demo import DemoProject
from tests.support.scoring import Cohort, copy_cohort, score_job

N_STUDIES = 6


def stored_srs(server: OrthancServer, study_uid: str) -> list[pydicom.Dataset]:
    """Every SR instance Orthanc holds in ``study_uid``: found with QIDO-RS, retrieved with WADO-RS."""
    session = requests.Session()
    session.auth = server.auth
    client = DICOMwebClient(server.dicomweb_url, session=session)
    found = []
    for series in client.search_for_series(study_instance_uid=study_uid, search_filters={"Modality": "SR"}):
        series_uid = series["0020000E"]["Value"][0]
        for instance in client.search_for_instances(study_instance_uid=study_uid, series_instance_uid=series_uid):
            sop_uid = instance["00080018"]["Value"][0]
            found.append(client.retrieve_instance(study_uid, series_uid, sop_uid))
    return found


def instance_count(server: OrthancServer) -> int:
    reply = requests.get(f"{server.url}/statistics", auth=server.auth, timeout=30)
    reply.raise_for_status()
    return int(reply.json()["CountInstances"])


def sent_status(out: Path) -> dict[str, str]:
    with closing(sqlite3.connect(f"file:{out / 'ledger.sqlite'}?mode=ro", uri=True)) as db:
        return dict(db.execute("SELECT study_uid, status FROM sr_sent").fetchall())


@pytest.mark.slow
def test_stow_sends_each_sr_once_retries_failures_on_the_next_run(
    demo_project: DemoProject,
    demo_cohort: Cohort,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cohort = copy_cohort(demo_cohort, tmp_path / "cohort", N_STUDIES)
    scan = scan_dicom_folder(cohort.dicom)
    uids = set(scan.studies)
    with running_orthanc(tmp_path / "orthanc") as server:
        sources = [p for study in scan.studies.values() for p in study.paths]
        assert not server.upload(sources).refused
        monkeypatch.setenv(USER_ENV, server.username)
        monkeypatch.setenv(PASSWORD_ENV, server.password)
        out = tmp_path / "out"
        options = {"sr": True, "workers": 1, "part_size": 4}

        # the PACS is down: every send fails, is recorded in the ledger, and the job still finishes
        down = f"http://127.0.0.1:{free_port()}/dicom-web"
        first = score_job(demo_project, cohort, out, stow=down, stow_attempts=2, **options)
        assert first.scored == N_STUDIES and first.srs_sent_this_run == 0 and first.srs_unsent == N_STUDIES
        assert sent_status(out) == dict.fromkeys(uids, "failed")
        assert "not sent" in first.text()

        # the next run sends what is left, and only that
        second = score_job(demo_project, cohort, out, stow=server.dicomweb_url, **options)
        assert second.scored_this_run == 0 and second.srs_sent_this_run == N_STUDIES and second.srs_unsent == 0
        assert sent_status(out) == dict.fromkeys(uids, "sent")
        third = score_job(demo_project, cohort, out, stow=server.dicomweb_url, **options)
        assert third.srs_sent_this_run == 0
        assert instance_count(server) == len(sources) + N_STUDIES

        results = read_results(out).set_index("study_uid")
        for uid in uids:
            (stored,) = stored_srs(server, uid)  # one SR, in the study it was scored from
            (local,) = (out / "sr").glob(f"*/{uid}.dcm")
            written = pydicom.dcmread(local)
            assert (stored.StudyInstanceUID, stored.SOPInstanceUID) == (uid, written.SOPInstanceUID)
            source = pydicom.dcmread(scan.studies[uid].paths[0], stop_before_pixels=True)
            assert (stored.PatientID, str(stored.PatientName)) == (source.PatientID, str(source.PatientName))
            sr = hd.sr.Comprehensive3DSR.from_dataset(stored)
            assert sr.VerificationFlag == "UNVERIFIED"
            report = sr.content
            assert isinstance(report, hd.sr.MeasurementReport)
            for group in report.get_image_measurement_groups():
                label = str(group.tracking_identifier)
                (p,) = [m.value for m in group.get_measurements() if m.name.value == "122157"]
                assert float(p) == pytest.approx(results.loc[uid, f"prob_{label}"], rel=1e-9, abs=1e-12)
                texts = {
                    i.ConceptNameCodeSequence[0].CodeValue: str(i.TextValue)
                    for i in group[0].ContentSequence
                    if i.ValueType == "TEXT"
                }
                assert (texts["111001"], texts["111003"]) == (
                    results.loc[uid, "model_name"],
                    results.loc[uid, "model_version"],
                )

        # the same studies scored again into a new folder: the same SRs (same UIDs), stored once
        again = score_job(demo_project, cohort, tmp_path / "again", stow=server.dicomweb_url, **options)
        assert again.srs_sent_this_run == N_STUDIES
        assert instance_count(server) == len(sources) + N_STUDIES
        assert all(len(stored_srs(server, uid)) == 1 for uid in uids)
