"""Shipped configs are package data, loaded by name from any folder; their relative paths resolve in the cwd."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from medfusion.cli import _load, app
from medfusion.config import load_config, shipped_config_names, shipped_configs_dir
from medfusion.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_the_shipped_configs_live_in_the_package() -> None:
    assert shipped_config_names() == ["chest_xray", "demo"]
    assert shipped_configs_dir() == ROOT / "medfusion" / "configs"


def test_a_shipped_config_loads_by_name_from_another_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    demo = load_config("demo")
    assert demo.name == "demo" and demo.project_dir == tmp_path / "runs" / "demo"
    site = load_config("chest_xray")
    assert site.data.manifest == tmp_path / "data" / "chest_xray" / "manifest.parquet"
    # The same file by path resolves the same way: never inside the package.
    by_path = load_config(shipped_configs_dir() / "demo.yaml")
    assert by_path.project_dir == tmp_path / "runs" / "demo"
    assert list(tmp_path.iterdir()) == []  # loading writes nothing


def test_an_unknown_name_lists_the_shipped_configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"nope: no such config file.*chest_xray, demo"):
        load_config("nope")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("nope.yaml")


def test_a_file_in_the_cwd_wins_over_a_shipped_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").write_text("name: mine\nlabels: [a]\nproject_dir: out\ndata: {source: demo}\n")
    mine = load_config("demo")
    assert mine.name == "mine" and mine.project_dir == tmp_path / "out"


def test_own_config_paths_resolve_against_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "site" / "configs"
    folder.mkdir(parents=True)
    (folder / "x.yaml").write_text("name: x\nlabels: [a]\nproject_dir: runs/x\ndata: {source: demo}\n")
    monkeypatch.chdir(tmp_path)
    assert load_config(folder / "x.yaml").project_dir == tmp_path / "site" / "runs" / "x"


def test_cli_default_config_and_project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["validate-config"])
    assert result.exit_code == 0, result.output
    assert f"project_dir: {tmp_path / 'runs' / 'demo'}" in result.output
    assert _load(Path("demo"), None, Path("elsewhere")).project_dir == tmp_path / "elsewhere"
    for command in ("demo", "train", "score", "review"):
        help_text = CliRunner().invoke(app, [command, "--help"]).output
        assert "--project-dir" in help_text, command
