"""build-manifest checks its small inputs (label and report files) before scanning the DICOM archive."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from medfusion.cli import app
from medfusion.errors import ReportParseError
from medfusion.ingest.archive import build_manifest
from medfusion.ingest.label_file import MissingLabelColumns
from medfusion.ingest.reports.read import CSV_REPORT_COLUMNS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A label file keyed by study with the user's own labels, a good report CSV and a bad one."""
    labels = tmp_path / "labels.csv"
    labels.write_text("study_uid,pneumothorax,edema\n1.2.3,1,0\n")
    reports = tmp_path / "reports.csv"
    reports.write_text("study_uid,report\n1.2.3,FINDINGS: clear.\n")
    bad_reports = tmp_path / "bad_reports.csv"
    bad_reports.write_text("study_uid,text\n1.2.3,FINDINGS: clear.\n")
    # No DICOM folder at all: a check that ran after the scan would fail on the folder instead.
    return {"labels": labels, "reports": reports, "bad_reports": bad_reports, "dicom": tmp_path / "no_such_dicom"}


def test_missing_label_columns_fail_before_the_scan(files: dict[str, Path]) -> None:
    with pytest.raises(MissingLabelColumns) as info:
        build_manifest(files["dicom"], [files["reports"]], files["labels"], labels=["nodule", "edema"])
    assert info.value.missing == ["nodule"]
    assert str(files["labels"]) in str(info.value)
    assert "columns in the file: study_uid, pneumothorax, edema" in str(info.value)


def test_a_report_csv_without_its_text_column_fails_before_the_scan(files: dict[str, Path]) -> None:
    with pytest.raises(ReportParseError, match="missing report text column 'report'") as info:
        build_manifest(files["dicom"], [files["bad_reports"]], files["labels"], labels=["edema"])
    assert info.value.source == str(files["bad_reports"])
    for column in CSV_REPORT_COLUMNS:
        assert column in str(info.value)
    with pytest.raises(ReportParseError, match="no such file"):
        build_manifest(files["dicom"], [files["dicom"].with_suffix(".csv")], files["labels"], labels=["edema"])


def test_cli_names_the_file_the_config_labels_and_how_to_pass_yours(files: dict[str, Path], tmp_path: Path) -> None:
    config = ROOT / "medfusion" / "configs" / "demo.yaml"
    args = ["build-manifest", "--dicom", str(files["dicom"]), "--reports", str(files["reports"])]
    args += ["--labels", str(files["labels"]), "--out", str(tmp_path / "m.parquet"), "-c", str(config)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    line = " ".join(result.output.split())
    assert "Traceback" not in line
    assert str(files["labels"]) in line
    assert "lacks column(s): nodule, cardiomegaly, effusion, fracture, pneumonia" in line
    assert f"the labels come from the config {config}" in line
    assert "-c my.yaml" in line and '--set "labels=[pneumothorax, edema]"' in line
    # Following the advice gets past the label check (to the missing DICOM folder).
    result = CliRunner().invoke(app, [*args, "--set", "labels=[pneumothorax, edema]"])
    assert result.exit_code == 1 and "no_such_dicom" in result.output and "lacks column" not in result.output


def test_report_csv_columns_are_documented() -> None:
    help_text = " ".join(CliRunner().invoke(app, ["build-manifest", "--help"]).output.split())
    readme = (ROOT / "README.md").read_text()
    for column in CSV_REPORT_COLUMNS:
        assert column in help_text
        assert f"`{column}`" in readme
    assert "Report CSV columns: report (the text, required)" in help_text
