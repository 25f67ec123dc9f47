"""FHIR Bulk Data ``$export`` output as a report source: the manifest and its per-type NDJSON files,
references resolved across files, and every unusable entry recorded with its reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medfusion.errors import ReportParseError
from medfusion.fhir.read import is_bulk_manifest, read_fhir_reports
from medfusion.ingest.reports.read import read_reports
from tests.support.fhir_resources import diagnostic_report, imaging_study, write_json, write_ndjson

UIDS = [f"1.2.826.0.1.3680043.8.498.{n}" for n in (11, 12, 13)]
BASE = "https://fhir.example.org/bulk/job-7f3a"


def _export(folder: Path, *, extra_outputs: list[dict[str, object]] | None = None) -> Path:
    """An export as a Bulk Data client saves it (FHIR Bulk Data Access IG, complete-status body):
    the manifest, DiagnosticReports over two files, their ImagingStudies in a third, Patients, and an
    error file; the reports name their study only by ``ImagingStudy/<id>``."""
    folder.mkdir(parents=True, exist_ok=True)
    reports = [diagnostic_report(f"r{n}", study=[{"reference": f"ImagingStudy/s{n}"}]) for n in range(3)]
    write_ndjson(folder / "DiagnosticReport-1.ndjson", [json.dumps(r) for r in reports[:2]])
    write_ndjson(folder / "DiagnosticReport-2.ndjson", [json.dumps(reports[2])])
    write_ndjson(folder / "ImagingStudy.ndjson", [json.dumps(imaging_study(f"s{n}", UIDS[n])) for n in range(3)])
    write_ndjson(folder / "Patient.ndjson", [json.dumps({"resourceType": "Patient", "id": "p1"})])
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing"}]}
    write_ndjson(folder / "OperationOutcome.ndjson", [json.dumps(outcome)])
    outputs: list[dict[str, object]] = [
        {"type": "DiagnosticReport", "url": f"{BASE}/DiagnosticReport-1.ndjson", "count": 2},
        {"type": "Patient", "url": f"{BASE}/Patient.ndjson", "count": 1},
        {"type": "ImagingStudy", "url": f"{BASE}/ImagingStudy.ndjson", "count": 3},
        {"type": "DiagnosticReport", "url": "DiagnosticReport-2.ndjson", "count": 1},  # a relative url
    ]
    manifest = {
        "transactionTime": "2026-11-30T08:00:00Z",
        "request": "https://fhir.example.org/Group/g1/$export?_type=DiagnosticReport,ImagingStudy,Patient",
        "requiresAccessToken": True,
        "output": outputs + (extra_outputs or []),
        "error": [{"type": "OperationOutcome", "url": f"{BASE}/OperationOutcome.ndjson"}],
    }
    return write_json(folder / "manifest.json", manifest)


def test_an_export_resolves_reports_to_studies_across_its_files(tmp_path: Path) -> None:
    manifest = _export(tmp_path / "export")
    by_manifest = read_reports(manifest)
    assert by_manifest.rejected == []
    assert {r.report_id: r.study_uid for r in by_manifest.reports} == {"r0": UIDS[0], "r1": UIDS[1], "r2": UIDS[2]}
    by_folder = read_reports(manifest.parent)  # the folder: read by its manifest, no file read twice
    assert sorted((r.report_id, r.study_uid) for r in by_folder.reports) == sorted(
        (r.report_id, r.study_uid) for r in by_manifest.reports
    )
    assert by_folder.rejected == []


def test_files_of_one_folder_resolve_references_across_each_other(tmp_path: Path) -> None:
    """Without a manifest too: reports in one NDJSON, their ImagingStudies in another."""
    manifest = _export(tmp_path / "export")
    manifest.unlink()
    (manifest.parent / "OperationOutcome.ndjson").unlink()
    batch = read_reports(manifest.parent)
    assert {r.report_id: r.study_uid for r in batch.reports} == {"r0": UIDS[0], "r1": UIDS[1], "r2": UIDS[2]}
    alone = read_fhir_reports(manifest.parent / "DiagnosticReport-1.ndjson")  # one file: nothing to resolve with
    assert {r.study_uid for r in alone.reports} == {None}


def test_unusable_manifest_entries_and_lines_are_rejected_and_the_rest_read(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    outside = tmp_path / "secret.ndjson"
    write_ndjson(outside, [json.dumps(diagnostic_report("leak"))])
    extra: list[dict[str, object]] = [
        {"type": "DiagnosticReport", "url": f"{BASE}/DiagnosticReport-3.ndjson"},  # listed, never downloaded
        {"type": "DiagnosticReport", "url": "../secret.ndjson"},  # outside the export's folder
        {"type": "DiagnosticReport", "url": outside.as_uri()},
        {"type": "DiagnosticReport"},  # no url
        {"type": "DiagnosticReport", "url": f"{BASE}/Mixed.ndjson"},
        {"type": "DiagnosticReport", "url": "http://[::1/x.ndjson"},  # not a URL
        {"type": "DiagnosticReport", "url": "a%00b.ndjson"},  # a NUL byte
        {"type": "DiagnosticReport", "url": 7},
        "not an entry",
    ]
    manifest = _export(folder, extra_outputs=extra)
    write_ndjson(
        folder / "Mixed.ndjson",
        [json.dumps({"resourceType": "Patient", "id": "p2"}), json.dumps(diagnostic_report("r9")), "{broken"],
    )
    batch = read_reports(manifest)
    assert sorted(r.report_id for r in batch.reports) == ["r0", "r1", "r2", "r9"]
    reasons = {r.source: r.reason for r in batch.rejected}
    assert reasons == {
        f"{manifest} -> DiagnosticReport-3.ndjson": "Bulk Data output file: file not found",
        f"{manifest}#output 6": "Bulk Data output url is not a file in the manifest's folder",
        f"{manifest}#output 7": "Bulk Data output url is not a file in the manifest's folder",
        f"{manifest}#output 8": "Bulk Data output entry has no url",
        f"{manifest}#output 10": "Bulk Data output url is not a file in the manifest's folder",
        f"{manifest}#output 11": "Bulk Data output url is not a file in the manifest's folder",
        f"{manifest}#output 12": "Bulk Data output entry has no url",
        f"{manifest}#output 13": "Bulk Data output entry has no url",
        f"{folder / 'Mixed.ndjson'}:line 1": "a Patient in the DiagnosticReport file of the export",
        f"{folder / 'Mixed.ndjson'}:line 3": reasons[f"{folder / 'Mixed.ndjson'}:line 3"],
    }
    assert reasons[f"{folder / 'Mixed.ndjson'}:line 3"].startswith("malformed JSON")


@pytest.mark.parametrize(
    "doc",
    [
        {"output": [], "transactionTime": "2026-11-30T08:00:00Z", "request": "x"},
        {"output": [{"type": "DiagnosticReport", "url": "a.ndjson"}], "transactionTime": "t"},
    ],
)
def test_manifest_detection(doc: dict[str, object], tmp_path: Path) -> None:
    assert is_bulk_manifest(doc)
    assert not is_bulk_manifest({"resourceType": "Bundle", "output": [], "transactionTime": "t"})
    assert not is_bulk_manifest({"output": "x", "transactionTime": "t"})
    assert read_fhir_reports(write_json(tmp_path / "m.json", doc)).reports == []
    with pytest.raises(ReportParseError, match="expected a FHIR DiagnosticReport or Bundle"):
        read_fhir_reports(write_json(tmp_path / "not.json", {"output": []}))
