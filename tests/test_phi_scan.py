"""No patient name, ID, birth date or accession number leaves the process.

Needles are read from the demo cohort's DICOM headers with pydicom; the haystack is every file a
full demo flow wrote (MLflow's sqlite store dumped table by table, artifacts, training outputs,
Parquet cell by cell, logs captured at DEBUG), except the input cohort's own DICOM files and reports.
Outputs of other stages (scoring, review) are scanned when they exist in the project.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from tests.support.demo import DemoProject, small_demo_config
from tests.support.phi_scan import Needle, cohort_needles, find_phi, format_hits, output_files
from tests.support.threads import single_thread

#: Folders of the demo cohort that are the input itself (they hold PHI by construction).
COHORT_INPUTS = ("dicom", "reports")
#: The demo generator's name for its deliberately broken files (not a patient; "BROKEN" is a word).
PLACEHOLDER_NAMES = ("BROKEN^FILE",)


#: Output folders that must carry the patient's identifiers: DICOM SRs for the hospital's PACS
#: (``score --sr``, the review app's verified SRs); see docs/dicom_sr.md.
PACS_OUTPUTS = ("sr", "sr_verified")


def _inputs(cohort: Path) -> list[Path]:
    """What the scan leaves out: the cohort's input folders and, in the project, the SR folders."""
    project = cohort.parent
    return [cohort / name for name in COHORT_INPUTS] + [
        p for name in PACS_OUTPUTS for p in project.rglob(name) if p.is_dir()
    ]


def _needles(cohort: Path) -> list[Needle]:
    needles = cohort_needles(cohort / "dicom", placeholder_names=PLACEHOLDER_NAMES)
    kinds = {n.kind for n in needles}
    assert {"patient_name", "patient_id", "birth_date", "accession"} <= kinds, kinds
    return needles


def test_scanner_finds_planted_phi(tmp_path: Path, demo_project: DemoProject) -> None:
    """The scanner itself: PHI planted in a log, a sqlite table and a Parquet cell is found."""
    import sqlite3

    needles = _needles(demo_project.cohort_dir)
    name = next(n for n in needles if n.kind == "patient_name").value
    pid = next(n for n in needles if n.kind == "patient_id").value
    acc = next(n for n in needles if n.kind == "accession").value
    (tmp_path / "run.log").write_text(f"reading study of {name.lower()}\n")
    con = sqlite3.connect(tmp_path / "x.db")
    con.execute("create table t (v text)")
    con.execute("insert into t values (?)", (pid,))
    con.commit()
    con.close()
    pd.DataFrame({"acc": [acc]}).to_parquet(tmp_path / "x.parquet", compression="zstd")
    # A model's shipped wheel: its members that are medfusion's own source files are code, not outputs
    # (the demo generator's invented names), but a changed "source" file is scanned like any output.
    import zipfile

    import medfusion.datasets.demo.cohort as cohort_module

    source = Path(cohort_module.__file__).read_bytes()
    with zipfile.ZipFile(tmp_path / "own.whl", "w", compression=zipfile.ZIP_DEFLATED) as whl:
        whl.writestr("medfusion/datasets/demo/cohort.py", source)
    with zipfile.ZipFile(tmp_path / "changed.whl", "w", compression=zipfile.ZIP_DEFLATED) as whl:
        whl.writestr("medfusion/datasets/demo/cohort.py", source + f"# {pid}\n".encode())
    hits = find_phi(output_files(tmp_path), needles)
    found = {(Path(h.path.split("::")[0]).name, h.needle.value) for h in hits}
    assert {("run.log", name), ("x.db", pid), ("x.parquet", acc), ("changed.whl", pid)} <= found, format_hits(hits)
    assert not any(Path(h.path.split("::")[0]).name == "own.whl" for h in hits), format_hits(hits)


def test_demo_project_outputs_hold_no_phi(demo_project: DemoProject) -> None:
    """Everything the shared demo project wrote: mlflow.db, mlartifacts/, training/, manifest, ..."""
    cohort = demo_project.cohort_dir
    files = output_files(demo_project.config.project_dir, exclude=_inputs(cohort))
    names = {p.name for p in files}
    assert "mlflow.db" in names and "manifest.parquet" in names and "model.safetensors" in names, sorted(names)
    hits = find_phi(files, _needles(cohort))
    print(f"PHI scan: {len(files)} files, {len(_needles(cohort))} needles, {len(hits)} hits")  # noqa: T201
    assert not hits, format_hits(hits)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_full_flow_logs_and_outputs_hold_no_phi(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A fresh small flow with every log record captured at DEBUG: train, register, promote, score
    through the pyfunc, and batch-score the archive (ledger, Parquet parts, FHIR, summary)."""
    import mlflow

    from medfusion.scoring.job import ScoreOptions, run_score
    from medfusion.tracking.promotion import promote_challenger
    from medfusion.workflow import train_and_register

    config = small_demo_config(
        tmp_path / "project",
        data__demo={"n_studies": 48, "image_size": 64, "broken_files": 3},
        training__epochs=2,
        training__early_stopping_patience=2,
    )
    caplog.set_level(logging.DEBUG)
    with single_thread():
        outcome = train_and_register(config)
        promote_challenger(config)
        cohort = config.project_dir / "demo_cohort"
        dicoms = sorted(str(p) for p in (cohort / "dicom").rglob("*") if p.is_file())
        model = mlflow.pyfunc.load_model(f"models:/{outcome.registered_model}/{outcome.version}")
        scored = model.predict(
            pd.DataFrame({"image_paths": [[p] for p in dicoms], "report_text": ["" for _ in dicoms]})
        )
        summary = run_score(
            ScoreOptions(
                source=str(cohort / "dicom"),
                out_dir=config.project_dir / "scores",
                reports=cohort / "reports",
                model=f"models:/{outcome.registered_model}/{outcome.version}",
                tracking_uri=outcome.tracking_uri,
                fhir=True,
                workers=1,
            )
        )
    assert (scored["error"] != "").any()  # the broken files were scored too (errors are outputs)
    assert summary.scored > 0 and summary.failed + summary.rejected_files > 0  # dead letters are outputs too
    assert list((config.project_dir / "scores" / "fhir").glob("*.ndjson"))
    scored.to_parquet(config.project_dir / "scored.parquet")
    log_file = config.project_dir / "captured.log"
    log_file.write_text(
        "\n".join(f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records),
        encoding="utf-8",
    )
    assert len(caplog.records) > 20  # the flow did log (at DEBUG), so an empty scan means something

    pickles = [p for p in (config.project_dir / "mlartifacts").rglob("*") if p.suffix in (".pkl", ".pickle")]
    assert not pickles, pickles  # the pyfunc is logged as code (models from code), weights as safetensors

    needles = _needles(cohort)
    files = output_files(config.project_dir, exclude=_inputs(cohort))
    hits = find_phi(files, needles)
    print(f"PHI scan: {len(files)} files, {len(caplog.records)} log records, {len(needles)} needles, {len(hits)} hits")  # noqa: T201
    assert not hits, format_hits(hits)
