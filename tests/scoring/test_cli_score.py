"""``medfusion score`` errors: one clear line, exit status 1."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from medfusion.cli import app

runner = CliRunner()


def test_unknown_engine_and_bad_model_exit_1(tmp_path: Path) -> None:
    (tmp_path / "dicom").mkdir()
    result = runner.invoke(
        app,
        [
            "score",
            str(tmp_path / "dicom"),
            "--out",
            str(tmp_path / "o"),
            "--engine",
            "spark",
        ],
    )
    assert result.exit_code == 1 and "unknown engine 'spark'" in result.output and "Traceback" not in result.output
    result = runner.invoke(
        app,
        [
            "score",
            str(tmp_path / "dicom"),
            "--out",
            str(tmp_path / "o"),
            "--model",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 1 and "not a medfusion model folder" in result.output


def test_missing_source_folder_exits_1(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "score",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "o"),
            "--model",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 1 and "nowhere" in result.output
