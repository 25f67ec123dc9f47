"""The command line: help, config validation, clear errors without tracebacks."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from medfusion.cli import _parse_overrides, app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_help_lists_the_subcommands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "demo-data", "build-manifest", "train", "promote", "score", "review", "validate-config"):
        assert command in result.output


def test_validate_config_prints_resolved_config() -> None:
    result = runner.invoke(app, ["validate-config", str(ROOT / "medfusion" / "configs" / "demo.yaml")])
    assert result.exit_code == 0, result.output
    assert "fusion:" in result.output and "hybrid" in result.output


def test_bad_config_is_one_clear_line_and_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("labels: [a]\nfusoin: {}\n")
    result = runner.invoke(app, ["validate-config", str(bad)])
    assert result.exit_code == 1
    assert "fusoin: unknown key" in result.output
    assert "Traceback" not in result.output


def test_overrides_parse_yaml_values() -> None:
    assert _parse_overrides(["fusion.name=late", "training.epochs=3", "data.image_size=[32, 32]"]) == {
        "fusion": {"name": "late"},
        "training": {"epochs": 3},
        "data": {"image_size": [32, 32]},
    }


def test_library_chatter_stays_below_warning_on_the_console() -> None:
    """highdicom logs a line per module it copies into each SR: a job of thousands of studies must not
    flood the console (its warnings still show)."""
    import logging

    result = runner.invoke(app, ["validate-config", "demo"])
    assert result.exit_code == 0, result.output
    for name in ("highdicom", "urllib3", "PIL"):
        assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING, name
