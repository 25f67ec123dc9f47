"""Report readers (text, CSV, FHIR JSON / NDJSON / Bundle) and the FHIR writer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.bundle import Bundle
from fhir.resources.diagnosticreport import DiagnosticReport
from fhir.resources.imagingstudy import ImagingStudy

from medfusion.errors import ReportParseError
from medfusion.fhir.codes import ACCESSION_PSEUDONYM_SYSTEM
from medfusion.fhir.read import read_fhir_reports, report_from_fhir_json
from medfusion.fhir.write import report_to_fhir, write_fhir_bundle, write_fhir_ndjson
from medfusion.ingest.records import (
    Report,
    ReportBatch,
    join_locator,
    record_locator,
    split_locator,
)
from medfusion.ingest.reports.read import (
    read_csv_reports,
    read_reports,
    read_text_reports,
)
from medfusion.ingest.reports.text import report_from_text
from medfusion.privacy import pseudonym
from tests.support.fhir_resources import (
    TEXT,
    bundle,
    diagnostic_report,
    imaging_study,
    uid_ref,
    write_json,
    write_ndjson,
)

UID = "1.2.826.0.1.3680043.8.498.1"
UID2 = "1.2.826.0.1.3680043.8.498.2"
ACC = "ACC-77001"
# ------------------------------------------------------------------------------------------- text


def test_report_from_text_builds_report() -> None:
    raw = b"\xef\xbb\xbf" + TEXT.replace("\n", "\r\n").encode() + b"\n\n"  # BOM, CRLF, trailing blank lines
    report = report_from_text(raw, source="x.txt", accession=ACC, study_uid=UID)
    assert report.text == TEXT
    assert report.sections["IMPRESSION"] == "Left pleural effusion."
    assert report.accession_pseudonym == pseudonym(ACC, kind="acc")
    assert ACC not in repr(report)
    assert report.study_uid == UID
    assert report.source == "x.txt"


@pytest.mark.parametrize(
    ("text", "kwargs", "reason"),
    [
        (b"caf\xe9 report", {}, "not valid UTF-8"),
        ("   \n\t ", {}, "empty report text"),
        ("", {}, "empty report text"),
        ("x" * 101, {"max_chars": 100}, "too long (101 characters, limit 100)"),
        ("ok", {"study_uid": "1.2.abc"}, "not a valid DICOM UID"),
        ("bin\x00ary", {}, "NUL"),
    ],
)
def test_report_from_text_rejects(text: str | bytes, kwargs: dict[str, Any], reason: str) -> None:
    with pytest.raises(ReportParseError, match=r"report\.txt") as info:
        report_from_text(text, source="report.txt", **kwargs)
    assert reason in info.value.reason


def test_report_from_text_default_limit() -> None:
    assert len(report_from_text("a" * 100_000, source="s").text) == 100_000
    with pytest.raises(ReportParseError, match="too long"):
        report_from_text("a" * 100_001, source="s")


def test_read_text_reports_folder(tmp_path: Path) -> None:
    (tmp_path / "r1.txt").write_text(TEXT, encoding="utf-8")
    (tmp_path / f"{UID}.txt").write_text("IMPRESSION: normal", encoding="utf-8")
    (tmp_path / "latin1.txt").write_bytes("Épanchement".encode("latin-1"))
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("ignored", encoding="utf-8")
    batch = read_text_reports(tmp_path)
    assert [r.report_id for r in batch.reports] == [UID, "r1"]
    assert batch.reports[0].study_uid == UID and batch.reports[1].study_uid is None
    rejected = {Path(r.source).name: r.reason for r in batch.rejected}
    assert set(rejected) == {"latin1.txt", "empty.txt"}
    assert "UTF-8" in rejected["latin1.txt"] and "empty" in rejected["empty.txt"]


def test_read_text_reports_single_file_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "one.txt"
    path.write_text(TEXT, encoding="utf-8")
    assert [r.report_id for r in read_text_reports(path).reports] == ["one"]
    with pytest.raises(ReportParseError, match="no such file"):
        read_text_reports(tmp_path / "nope")


# -------------------------------------------------------------------------------------------- CSV


def test_read_csv_reports(tmp_path: Path) -> None:
    path = tmp_path / "reports.csv"
    path.write_text(
        "accession_number,study_uid,report\n"
        f'{ACC},{UID},"FINDINGS: a\nIMPRESSION: b"\n'
        ",,\n"
        f"A2,not-a-uid,text\n"
        f",{UID2},plain text\n",
        encoding="utf-8",
    )
    batch = read_csv_reports(path)
    assert [r.text for r in batch.reports] == ["FINDINGS: a\nIMPRESSION: b", "plain text"]
    first, second = batch.reports
    assert first.accession_pseudonym == pseudonym(ACC, kind="acc") and first.study_uid == UID
    assert first.sections == {"FINDINGS": "a", "IMPRESSION": "b"}
    assert second.accession_pseudonym is None and second.study_uid == UID2
    assert [(r.source, r.reason) for r in batch.rejected] == [
        (f"{path}:row 2", "empty report text"),
        (f"{path}:row 3", "study UID is not a valid DICOM UID"),
    ]


def test_read_csv_reports_custom_columns_and_optional_keys(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("id,text\n7,hello\n", encoding="utf-8")
    batch = read_csv_reports(path, text_column="text", id_column="id")
    assert batch.reports[0].report_id == "7" and batch.reports[0].study_uid is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"accession_number,text\nA,x\n", "missing report text column 'report'"),
        (b"report\ncaf\xe9\n", "not UTF-8"),
        (b"", "empty CSV"),
    ],
)
def test_read_csv_reports_file_errors(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(ReportParseError, match=r"bad\.csv") as info:
        read_csv_reports(path)
    assert reason in info.value.reason


# ------------------------------------------------------------------------------------------- FHIR


def test_fhir_single_report(tmp_path: Path) -> None:
    path = write_json(tmp_path / "dr.json", diagnostic_report("r1", accession=ACC, study=[uid_ref(UID)]))
    batch = read_fhir_reports(path)
    assert batch.rejected == []
    (report,) = batch.reports
    assert report.text == TEXT
    assert report.sections["FINDINGS"] == "Small left effusion."
    assert report.accession_pseudonym == pseudonym(ACC, kind="acc")
    assert report.study_uid == UID
    assert (report.report_id, report.status, report.source) == ("r1", "final", str(path))


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"text": "from form", "conclusion": "from conclusion", "narrative": "<p>n</p>"}, "from form"),
        ({"text": None, "conclusion": "from conclusion", "narrative": "<p>n</p>"}, "from conclusion"),
        (
            {"text": None, "narrative": "<p>FINDINGS: clear &amp; dry</p><p>IMPRESSION: ok</p>"},
            "FINDINGS: clear & dry\nIMPRESSION: ok",
        ),
    ],
)
def test_fhir_text_sources(tmp_path: Path, kwargs: dict[str, Any], expected: str) -> None:
    batch = read_fhir_reports(write_json(tmp_path / "dr.json", diagnostic_report("r1", **kwargs)))
    assert [r.text for r in batch.reports] == [expected]


def test_fhir_report_without_text_is_rejected(tmp_path: Path) -> None:
    batch = read_fhir_reports(write_json(tmp_path / "dr.json", diagnostic_report("r1", text=None)))
    assert batch.reports == [] and "no report text" in batch.rejected[0].reason


@pytest.mark.parametrize("status", ["entered-in-error", "cancelled"])
def test_fhir_withdrawn_status_is_rejected(tmp_path: Path, status: str) -> None:
    path = write_json(tmp_path / "b.json", bundle(diagnostic_report("bad", status=status), diagnostic_report("ok")))
    batch = read_fhir_reports(path)
    assert [r.report_id for r in batch.reports] == ["ok"]
    assert [(r.source, r.reason) for r in batch.rejected] == [(f"{path}#entry 1", f"report status is {status}")]


def test_fhir_bundle_resolves_imaging_study_references(tmp_path: Path) -> None:
    resources = (
        diagnostic_report("by-id", study=[{"reference": "ImagingStudy/s1"}]),
        diagnostic_report("by-url", study=[{"reference": "urn:uuid:7f9b2c9e-0000-4000-8000-000000000002"}]),
        diagnostic_report("absolute", study=[{"reference": "https://fhir.example.org/r5/ImagingStudy/s1"}]),
        diagnostic_report("dangling", study=[{"reference": "ImagingStudy/unknown"}]),
        imaging_study("s1", UID),
        imaging_study("s2", UID2),
    )
    urls = ["", "", "", "", "", "urn:uuid:7f9b2c9e-0000-4000-8000-000000000002"]
    batch = read_fhir_reports(write_json(tmp_path / "b.json", bundle(*resources, full_urls=urls)))
    assert batch.rejected == []
    assert {r.report_id: r.study_uid for r in batch.reports} == {
        "by-id": UID,
        "by-url": UID2,
        "absolute": UID,
        "dangling": None,
    }


def test_fhir_bundle_invalid_entry_is_rejected_and_others_carry_on(tmp_path: Path) -> None:
    doc = bundle(diagnostic_report("r1"), diagnostic_report("r2"))
    del doc["entry"][0]["resource"]["code"]
    doc["entry"].append({"fullUrl": "urn:uuid:x"})  # no resource
    path = write_json(tmp_path / "b.json", doc)
    batch = read_fhir_reports(path)
    assert [r.report_id for r in batch.reports] == ["r2"]
    assert batch.rejected[0].source == f"{path}#entry 1"
    assert batch.rejected[0].reason.startswith("invalid DiagnosticReport: code")
    assert batch.rejected[1].source == f"{path}#entry 3"


def test_fhir_ndjson_mixed_resources_and_bad_lines(tmp_path: Path) -> None:
    bad_resource = diagnostic_report("bad")
    bad_resource["presentedForm"][0]["data"] = "%%% not base64"
    lines = [
        json.dumps(diagnostic_report("r1", accession=ACC, study=[{"reference": "ImagingStudy/s1"}])),
        "",
        json.dumps({"resourceType": "Patient", "id": "p1"}),
        '{"resourceType": "DiagnosticReport", "status": ',
        json.dumps(imaging_study("s1", UID)),
        "   ",
        json.dumps(bad_resource),
        json.dumps(diagnostic_report("r2", status="preliminary")),
        json.dumps(["not", "a", "resource"]),
        json.dumps({"resourceType": "ImagingStudy", "id": "s9", "status": "nonsense-status", "subject": 5}),
    ]
    path = write_ndjson(tmp_path / "reports.ndjson", lines)
    batch = read_fhir_reports(path)
    assert [(r.report_id, r.study_uid, r.status) for r in batch.reports] == [
        ("r1", UID, "final"),
        ("r2", None, "preliminary"),
    ]
    reasons = {r.source: r.reason for r in batch.rejected}
    assert set(reasons) == {f"{path}:line {n}" for n in (4, 7, 9, 10)}
    assert reasons[f"{path}:line 4"].startswith("malformed JSON")
    assert reasons[f"{path}:line 7"].startswith("invalid DiagnosticReport: presentedForm.0.data")
    assert reasons[f"{path}:line 9"] == "not a FHIR resource (no resourceType)"
    assert reasons[f"{path}:line 10"].startswith("invalid ImagingStudy")
    assert ACC not in json.dumps([r.__dict__ for r in batch.rejected])


def test_fhir_ndjson_line_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(json.dumps(diagnostic_report("r1")).encode() + b"\n" + b'{"x": "\xff"}\n')
    batch = read_fhir_reports(path)
    assert len(batch.reports) == 1
    assert batch.rejected[0].source == f"{path}:line 2" and "UTF-8" in batch.rejected[0].reason


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"resourceType": "DiagnosticReport",', "malformed JSON"),
        (json.dumps({"resourceType": "Patient"}).encode(), "expected a FHIR DiagnosticReport or Bundle, got Patient"),
        (b"[1, 2]", "got no resourceType"),
        (b'{"resourceType": "Bundle", "type": "not-a-type", "entry": 3}', "entry is not a list"),
        (b'\xff\xfe{"resourceType": "Bundle"}', "JSON is not valid UTF-8"),
    ],
)
def test_fhir_json_file_errors(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(ReportParseError, match=r"bad\.json") as info:
        read_fhir_reports(path)
    assert reason in info.value.reason


def test_fhir_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ReportParseError, match="file not found"):
        read_fhir_reports(tmp_path / "absent.ndjson")


def test_json_file_holding_ndjson_is_read_as_ndjson(tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "export.json", [json.dumps(diagnostic_report(f"r{i}")) for i in range(3)])
    assert [r.report_id for r in read_fhir_reports(path).reports] == ["r0", "r1", "r2"]


def test_report_from_fhir_json() -> None:
    one = json.dumps(diagnostic_report("r1", accession=ACC, study=[uid_ref(UID)]))
    report = report_from_fhir_json(one, source="cell")
    assert (report.text, report.study_uid, report.source) == (TEXT, UID, "cell")
    linked = bundle(diagnostic_report("r2", study=[{"reference": "ImagingStudy/s1"}]), imaging_study("s1", UID2))
    assert report_from_fhir_json(json.dumps(linked).encode(), source="cell").study_uid == UID2


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ("{not json", "malformed JSON"),
        (json.dumps(diagnostic_report("r", status="entered-in-error")), "report status is entered-in-error"),
        (json.dumps({"resourceType": "DiagnosticReport", "status": "final"}), "invalid DiagnosticReport: code"),
        (json.dumps(bundle(diagnostic_report("a"), diagnostic_report("b"))), "expected one DiagnosticReport, found 2"),
        (json.dumps(diagnostic_report("a")) + "\n" + json.dumps(diagnostic_report("b")), "malformed JSON"),
    ],
)
def test_report_from_fhir_json_errors(doc: str, reason: str) -> None:
    with pytest.raises(ReportParseError, match=r"^cell: ") as info:
        report_from_fhir_json(doc, source="cell")
    assert reason in info.value.reason


# ----------------------------------------------------------------------------------- FHIR writing


def test_report_to_fhir_builds_valid_r5_resource() -> None:
    report = report_from_text(TEXT, source="s", report_id="rep-1")
    resource = report_to_fhir(report, accession=ACC, study_uid=UID, patient_reference="Patient/p1")
    again = DiagnosticReport.model_validate_json(resource.model_dump_json())
    assert again.id == "rep-1" and again.status == "final"
    assert (again.code.coding[0].system, again.code.coding[0].code) == ("http://loinc.org", "18748-4")
    assert again.presentedForm[0].contentType == "text/plain"
    assert again.presentedForm[0].data.decode() == TEXT
    assert again.conclusion == "Left pleural effusion."
    assert again.identifier[0].type.coding[0].code == "ACSN" and again.identifier[0].value == ACC
    assert again.study[0].identifier.system == "urn:dicom:uid"
    assert again.study[0].identifier.value == f"urn:oid:{UID}"
    assert again.subject.reference == "Patient/p1"


def test_report_to_fhir_minimal_and_errors() -> None:
    resource = report_to_fhir(Report(text="No headings here.", report_id="has space"))
    assert resource.id is None and resource.conclusion is None
    assert resource.identifier is None and resource.study is None and resource.subject is None
    assert resource.status == "final"
    assert report_to_fhir(Report(text="x", status="preliminary")).status == "preliminary"
    keyed = report_from_text("x", source="s", accession=ACC, study_uid=UID)
    with pytest.raises(ValueError, match="accession"):
        report_to_fhir(keyed, accession="OTHER")
    with pytest.raises(ValueError, match="study"):
        report_to_fhir(keyed, study_uid=UID2)
    with pytest.raises(ValueError, match="DICOM UID"):
        report_to_fhir(Report(text="x"), study_uid="abc")
    with pytest.raises(ValueError, match="FHIR id"):
        report_to_fhir(Report(text="x"), resource_id="bad id")


@pytest.mark.parametrize("writer", [write_fhir_ndjson, write_fhir_bundle], ids=["ndjson", "bundle"])
@pytest.mark.parametrize("clear_accession", [True, False], ids=["accession", "pseudonym-only"])
def test_fhir_round_trip(tmp_path: Path, writer: Any, clear_accession: bool) -> None:
    originals = [
        report_from_text(TEXT, source="a", accession=ACC, study_uid=UID, report_id="a1"),
        report_from_text("Plain text, no headings.", source="b", report_id="b1"),
        report_from_text("FINDINGS: ok\nIMPRESSION: normal", source="c", accession="Z9", report_id="c1"),
    ]
    accessions = [ACC, None, "Z9"] if clear_accession else [None, None, None]
    resources = [report_to_fhir(r, accession=a) for r, a in zip(originals, accessions, strict=True)]
    if not clear_accession:
        assert resources[0].identifier[0].system == ACCESSION_PSEUDONYM_SYSTEM
    path = writer(resources, tmp_path / ("out.ndjson" if writer is write_fhir_ndjson else "out.json"))
    batch = read_fhir_reports(path)
    assert batch.rejected == []
    got = [(r.text, r.sections, r.study_uid, r.accession_pseudonym, r.report_id) for r in batch.reports]
    want = [(r.text, r.sections, r.study_uid, r.accession_pseudonym, r.report_id) for r in originals]
    assert got == want
    if not clear_accession:
        assert ACC not in path.read_text(encoding="utf-8")


def test_write_fhir_bundle_is_a_collection(tmp_path: Path) -> None:
    study = ImagingStudy.model_validate(imaging_study("s1", UID))
    path = write_fhir_bundle([report_to_fhir(Report(text="x")), study], tmp_path / "sub" / "b.json")
    parsed = Bundle.model_validate_json(path.read_text(encoding="utf-8"))
    assert parsed.type == "collection" and len(parsed.entry) == 2


# --------------------------------------------------------------------------------------- dispatch


def test_read_reports_dispatch(tmp_path: Path) -> None:
    write_json(tmp_path / "a.json", diagnostic_report("fhir-json"))
    write_ndjson(tmp_path / "b.ndjson", [json.dumps(diagnostic_report("fhir-ndjson"))])
    write_ndjson(tmp_path / "c.jsonl", [json.dumps(diagnostic_report("fhir-jsonl"))])
    (tmp_path / "d.csv").write_text("report_id,report\ncsv-row,text\n", encoding="utf-8")
    (tmp_path / "e.txt").write_text("text", encoding="utf-8")
    (tmp_path / "f.json").write_text("{broken", encoding="utf-8")
    (tmp_path / "g.pdf").write_bytes(b"%PDF")
    expected = {
        "a.json": "fhir-json",
        "b.ndjson": "fhir-ndjson",
        "c.jsonl": "fhir-jsonl",
        "d.csv": "csv-row",
        "e.txt": "e",
    }
    for name, rid in expected.items():
        assert [r.report_id for r in read_reports(tmp_path / name).reports] == [rid]
    folder = read_reports(tmp_path)
    assert [r.report_id for r in folder.reports] == list(expected.values())
    assert [(Path(r.source).name, r.reason.split(":")[0]) for r in folder.rejected] == [("f.json", "malformed JSON")]
    with pytest.raises(ReportParseError, match=r"unsupported report file type '\.pdf'"):
        read_reports(tmp_path / "g.pdf")
    with pytest.raises(ReportParseError, match="no such file"):
        read_reports(tmp_path / "missing.csv")


def test_report_batch_extend() -> None:
    a, b = ReportBatch([Report(text="a")]), ReportBatch([Report(text="b")])
    a.extend(b)
    assert [r.text for r in a.reports] == ["a", "b"]


def test_rejection_locators_split_into_file_and_record(tmp_path: Path) -> None:
    """Every reader's rejection names the file and the record (line, row, entry) in a form that
    :func:`split_locator` reads back; whole files keep only the file."""
    ndjson = write_ndjson(tmp_path / "r.ndjson", [json.dumps(diagnostic_report("r1")), "{not json"])
    csv = tmp_path / "r.csv"
    csv.write_text("report,study_uid\nok,\n,\n", encoding="utf-8")
    doc = bundle(diagnostic_report("r1"))
    doc["entry"].append({"fullUrl": "urn:uuid:x"})
    bundled = write_json(tmp_path / "b.json", doc)
    (tmp_path / "empty.txt").write_text("  ")
    batch = read_reports(tmp_path)
    assert [split_locator(r.source) for r in batch.rejected] == [
        {"file": str(bundled), "entry": 2},
        {"file": str(tmp_path / "empty.txt")},
        {"file": str(csv), "row": 2},
        {"file": str(ndjson), "line": 2},
    ]
    assert split_locator(record_locator("/a:line 1/x.ndjson", "line", 12)) == {"file": "/a:line 1/x.ndjson", "line": 12}
    assert [join_locator(split_locator(r.source)) for r in batch.rejected] == [r.source for r in batch.rejected]


@pytest.mark.parametrize(
    "resource",
    [
        {"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "x"}, "presentedForm": "John Smith"},
        {"resourceType": "DiagnosticReport", "id": "John Smith", "status": "final", "code": {"text": "x"}},
        {"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "x"}, "issued": "John Smith"},
        {"resourceType": "DiagnosticReport", "status": "John Smith", "code": {"text": "x"}, "conclusion": "a"},
        {"resourceType": "DiagnosticReport", "status": "final", "code": "John Smith", "conclusion": "a"},
        {"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "x"}, "subject": "John Smith"},
    ],
)
def test_rejection_reasons_carry_no_report_content(tmp_path: Path, resource: dict[str, Any]) -> None:
    path = write_ndjson(tmp_path / "r.ndjson", [json.dumps(resource), '{"conclusion": "John Smith MRN 12345'])
    batch = read_fhir_reports(path)
    assert len(batch.rejected) == 2 and not batch.reports
    assert "John" not in json.dumps([(r.source, r.reason) for r in batch.rejected])
