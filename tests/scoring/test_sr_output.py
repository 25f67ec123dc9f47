"""``score --sr``: one DICOM SR per scored study under ``OUT/sr/part-N/``, exactly-once with the Parquet
parts (same ledger), valid (dciodvfy, dsrdump), equal to the Parquet results and to the source headers,
and the only output that holds identifiers. A job SIGKILLed between a part's renames and its commit
resumes with 0 SRs lost and 0 duplicated."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from medfusion.errors import MedfusionError
from medfusion.ingest.dicom.studies import scan_dicom_folder
from medfusion.scoring import read_results
from medfusion.scoring.job import ScoreOptions, ScoreSummary, run_score
from tests.dicom_sr.validators import dciodvfy_errors, dsrdump
from tests.support.demo import ROOT, DemoProject
from tests.support.phi_scan import cohort_needles, find_phi, format_hits, output_files
from tests.support.scoring import Cohort, copy_cohort, score_job

IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyDate")


def committed_parts(out: Path) -> set[str]:
    """Part names the job's ledger references (read-only)."""
    with closing(sqlite3.connect(f"file:{out / 'ledger.sqlite'}?mode=ro", uri=True, timeout=5)) as db:
        return {r[0] for r in db.execute("SELECT DISTINCT part FROM studies WHERE part IS NOT NULL")}


def sr_files(out: Path) -> dict[str, list[Path]]:
    """Every SR file on disk by study UID (a list: duplicates would show), any part folder."""
    found: dict[str, list[Path]] = {}
    for path in sorted((out / "sr").glob("*/*.dcm")):
        found.setdefault(path.stem, []).append(path)
    return found


def probability(group: hd.sr.MeasurementsAndQualitativeEvaluations, code: str) -> float:
    (value,) = [m.value for m in group.get_measurements() if m.name.value == code]
    return float(value)


def check_once(out: Path, uids: set[str]) -> None:
    """Exactly one SR per study of ``uids`` on disk, all in committed part folders, none left half-written."""
    files = sr_files(out)
    assert {uid: len(paths) for uid, paths in files.items() if len(paths) > 1} == {}  # 0 duplicated
    assert set(files) == uids  # 0 lost
    folders = {p.name for p in (out / "sr").iterdir()}
    assert folders == committed_parts(out)  # no orphan (uncommitted or temporary) SR folder


@pytest.mark.slow
def test_score_sr_writes_one_valid_sr_per_scored_study(
    demo_project: DemoProject, small_cohort: Cohort, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    summary = score_job(demo_project, small_cohort, out, sr=True, fhir=True, workers=1, part_size=5)
    results = read_results(out).set_index("study_uid")
    scan = scan_dicom_folder(small_cohort.dicom)
    assert summary.failed == 0 and summary.scored == len(results) == len(scan.studies) == 12
    check_once(out, set(results.index))
    labels = [c[len("prob_") :] for c in results.columns if c.startswith("prob_")]
    with closing(sqlite3.connect(out / "ledger.sqlite")) as db:
        part_of = dict(db.execute("SELECT study_uid, part FROM studies").fetchall())
    for uid, (path,) in sr_files(out).items():
        assert path.parent.name == part_of[uid]  # the SR belongs to its study's committed part
        assert dciodvfy_errors(path) == [], path.name
        sr = hd.sr.srread(path)
        row = results.loc[uid]
        assert (sr.StudyInstanceUID, sr.VerificationFlag, sr.CompletionFlag) == (uid, "UNVERIFIED", "COMPLETE")
        report = sr.content
        assert isinstance(report, hd.sr.MeasurementReport)
        groups = report.get_image_measurement_groups()
        assert [str(g.tracking_identifier) for g in groups] == labels
        for group, label in zip(groups, labels, strict=True):
            assert probability(group, "122157") == pytest.approx(row[f"prob_{label}"], rel=1e-9, abs=1e-12)
            assert probability(group, "122411") == pytest.approx(row[f"threshold_{label}"], rel=1e-9, abs=1e-12)
            (evaluation,) = group.get_qualitative_evaluations()
            assert evaluation.value.value == ("52101004" if row[f"decision_{label}"] else "272519000")
        algorithm = {
            item.ConceptNameCodeSequence[0].CodeValue: str(item.TextValue)
            for item in groups[0][0].ContentSequence
            if item.ValueType == "TEXT"
        }
        assert (algorithm["111001"], algorithm["111003"]) == (row["model_name"], row["model_version"])
        sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in scan.studies[uid].paths]
        for keyword in IDENTIFYING:
            assert str(sr.get(keyword, "")) == str(sources[0].get(keyword, "")), keyword
        assert {e[2] for e in sr.get_evidence()} == {s.SOPInstanceUID for s in sources}
    assert "Measurement Group" in dsrdump(next(iter(sr_files(out).values()))[0])

    # identifiers are in the SRs (for the PACS) and in no other output of the job
    needles = cohort_needles(small_cohort.dicom)
    assert find_phi(output_files(out / "sr"), needles)
    hits = find_phi(output_files(out, exclude=[out / "sr", out / "model"]), needles)
    assert not hits, format_hits(hits)

    # re-running the finished job writes nothing again
    before = {p: p.stat().st_mtime_ns for paths in sr_files(out).values() for p in paths}
    again = score_job(demo_project, small_cohort, out, sr=True, fhir=True, workers=1, part_size=5)
    assert again.scored_this_run == 0
    assert {p: p.stat().st_mtime_ns for paths in sr_files(out).values() for p in paths} == before


def _killed_score(cohort: Cohort, out: Path, project: DemoProject, target: str) -> subprocess.CompletedProcess[str]:
    """``medfusion score --sr`` (4 studies a part), SIGKILLed right after ``target`` was renamed into
    place (see :mod:`tests.scoring.die_after_rename`)."""
    args = [
        *("score", str(cohort.dicom), "--reports", str(cohort.reports), "--model", project.model_uri),
        *("--out", str(out), "--part-size", "4", "--workers", "1", "--batch-size", "4", "--no-progress", "--sr"),
        *("--config", str(ROOT / "medfusion" / "configs" / "demo.yaml")),
    ]
    pythonpath = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "MLFLOW_TRACKING_URI": project.tracking_uri, "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}
    cmd = [sys.executable, "-m", "tests.scoring.die_after_rename", target, *args]
    proc = subprocess.Popen(
        cmd, cwd=out.parent, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        _, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:  # timed out: take the job's workers along
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(cmd, proc.returncode, "", stderr)


@pytest.mark.slow
@pytest.mark.parametrize(
    "target",
    [
        "sr/part-000001",  # the SR folder in place, its Parquet part not yet written
        "part-000001",  # SR folder and Parquet part in place, the ledger commit not yet done
    ],
)
def test_kill_9_before_commit_then_resume_loses_and_duplicates_no_sr(
    demo_project: DemoProject, demo_cohort: Cohort, tmp_path: Path, target: str
) -> None:
    cohort = copy_cohort(demo_cohort, tmp_path / "cohort", 8)
    uids = set(scan_dicom_folder(cohort.dicom).studies)
    out = tmp_path / "out"
    killed = _killed_score(cohort, out, demo_project, target)
    assert killed.returncode == -signal.SIGKILL, f"rc={killed.returncode}: {killed.stderr[-2000:]!r}"
    assert committed_parts(out) == {"part-000000"}
    assert (out / "sr" / "part-000001").is_dir()  # written, never committed
    assert len(sr_files(out)) == 8 and len(list((out / "sr" / "part-000000").iterdir())) == 4
    needles = cohort_needles(cohort.dicom)
    assert not find_phi([_text_file(tmp_path / "stderr.txt", killed.stderr)], needles)  # nothing in the logs

    summary: ScoreSummary = score_job(demo_project, cohort, out, sr=True, workers=1, batch_size=4, part_size=4)
    assert summary.scored_this_run == 4 and summary.scored == 8 and summary.orphan_parts_deleted >= 1
    check_once(out, uids)
    assert set(read_results(out)["study_uid"]) == uids


def test_sr_options_are_checked_before_the_model(tmp_path: Path) -> None:
    (tmp_path / "dicom").mkdir()
    options = ScoreOptions(source=str(tmp_path / "dicom"), out_dir=tmp_path / "out", model="no-such-model", sr=True)
    with pytest.raises(MedfusionError, match="local engine only"):
        run_score(ScoreOptions(**{**options.__dict__, "engine": "ray"}))
    bad = tmp_path / "codes.yaml"
    bad.write_text("nodule: [not, a, code]\n", encoding="utf-8")
    with pytest.raises(MedfusionError, match="needs value, scheme and meaning"):
        run_score(ScoreOptions(**{**options.__dict__, "sr_codes": bad}))
    with pytest.raises(MedfusionError, match="add --sr"):
        run_score(ScoreOptions(**{**options.__dict__, "sr": False, "stow": "http://127.0.0.1:9/dicom-web"}))
    with pytest.raises(MedfusionError, match="credentials in the URL are refused"):
        run_score(ScoreOptions(**{**options.__dict__, "stow": "http://user:secret@127.0.0.1:9/dicom-web"}))
    assert not (tmp_path / "out").exists()


def _text_file(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
