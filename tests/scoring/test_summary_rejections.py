"""What a job could not use is recorded where it can be found: each malformed report record (file,
line, reason) in summary.json and the ledger, and one dead-letter table by stage and reason, printed
exactly as summary.json holds it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from medfusion.ingest.dicom.studies import scan_dicom_folder
from medfusion.scoring.job import PRINTED_REPORT_REJECTIONS
from tests.support.demo import DemoProject
from tests.support.scoring import Cohort, copy_cohort

from .cli_process import parse_dead_letter_table, run_cli

PHI = ("Smith", "Jane", "12345")
BAD_NDJSON = [
    '{"resourceType": "DiagnosticReport", "status": "final", "conclusion": "Patient John Smith, MRN 12345',
    "Patient Jane Doe MRN 12345 chest pain",
    '{"resourceType": "DiagnosticReport", "status": "final", "conclusion": "Smith", "code": "Jane"}',
    "[1, 2]",
]


@pytest.mark.slow
def test_report_rejections_and_the_dead_letter_table(
    demo_project: DemoProject, small_cohort: Cohort, tmp_path: Path
) -> None:
    cohort = copy_cohort(small_cohort, tmp_path / "cohort")
    ndjson = cohort.reports / "diagnostic_reports.ndjson"
    good = ndjson.read_text(encoding="utf-8").splitlines()
    ndjson.write_text("\n".join([*good, *BAD_NDJSON]) + "\n", encoding="utf-8")
    bad_lines = list(range(len(good) + 1, len(good) + 1 + len(BAD_NDJSON)))
    csv = cohort.reports / "extra.csv"
    csv.write_text("report,study_uid\nPatient Jane Smith,1.2.x\n,\n", encoding="utf-8")
    (cohort.dicom / "notes.dcm").write_text("not an image")  # discovery rejects it
    scan = scan_dicom_folder(cohort.dicom)
    victim = scan.studies[sorted(scan.studies)[2]].paths[0]
    victim.write_bytes(victim.read_bytes()[:-100])  # its study fails to decode
    out = tmp_path / "out"

    result = run_cli(
        [
            "score",
            cohort.dicom,
            "--reports",
            cohort.reports,
            "--model",
            demo_project.model_uri,
            "--out",
            out,
            "--workers",
            "1",
            "--no-progress",
        ],
        MLFLOW_TRACKING_URI=demo_project.tracking_uri,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((out / "summary.json").read_text())

    # every malformed report record: file, line (row for CSV), reason -- in summary.json ...
    expected = [(str(ndjson), "line", n) for n in bad_lines] + [(str(csv), "row", 1), (str(csv), "row", 2)]
    got = saved["report_rejections"]  # files in name order, records in file order
    assert [(r["file"], kind, r[kind]) for r, (_, kind, _) in zip(got, expected, strict=False)] == expected and len(
        got
    ) == 6
    reasons = [r["reason"] for r in got]
    assert reasons[0].startswith("malformed JSON") and reasons[1].startswith("malformed JSON")
    assert reasons[2].startswith("invalid DiagnosticReport: code")
    assert reasons[3:] == [
        "not a FHIR resource (no resourceType)",
        "study UID is not a valid DICOM UID",
        "empty report text",
    ]
    # ... in the ledger's dead letters (stage "reports") ...
    db = sqlite3.connect(out / "ledger.sqlite")
    rows = db.execute(
        "SELECT study_uid, file, reason FROM dead_letter WHERE stage = 'reports' ORDER BY rowid"
    ).fetchall()
    dump = json.dumps(db.execute("SELECT * FROM dead_letter").fetchall())
    db.close()
    assert rows == [(None, f"{file}:{kind} {n}", r) for (file, kind, n), r in zip(expected, reasons, strict=True)]
    # ... and the first few printed
    printed = result.stdout
    assert f"report records rejected (first {PRINTED_REPORT_REJECTIONS} of 6):" in printed
    for (file, kind, n), reason in list(zip(expected, reasons, strict=True))[:PRINTED_REPORT_REJECTIONS]:
        assert f"  {file}:{kind} {n}: {reason}" in printed
    # no report content anywhere
    for text in (json.dumps(saved), dump, printed, result.stderr):
        assert not any(word in text for word in PHI)

    # one table by stage and reason, printed exactly as summary.json holds it
    table, total = parse_dead_letter_table(printed)
    assert table == saved["dead_letters"] and list(table) == list(saved["dead_letters"])
    assert total == sum(n for reasons in table.values() for n in reasons.values())
    assert sum(table["reports"].values()) == 6 and sum(table["discover"].values()) == saved["rejected_files"] == 1
    assert sum(table["decode"].values()) == saved["failed"] == 1
    assert saved["scored"] == len(scan.studies) - 1
