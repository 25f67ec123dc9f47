"""Config validation: every shipped config loads; errors name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from medfusion.config import load_config
from medfusion.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["demo.yaml", "chest_xray.yaml"])
def test_shipped_configs_are_valid(name: str) -> None:
    config = load_config(ROOT / "configs" / name)
    assert config.labels
    assert config.project_dir.is_absolute()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("labels: [a]\ntraning: {epochs: 2}\n", "traning: unknown key"),
        ("labels: [a]\ntraining: {epochs: 0}\n", "training.epochs"),
        ("labels: [a]\nfusion: {name: magic}\n", "fusion.name"),
        ("labels: [a]\ntraining: {lr: -1}\n", "training.lr"),
        ("labels: [a, a]\n", "labels"),
        ("labels: []\n", "labels"),
        ("labels: [a]\ntext_encoder: {name_or_path: x, tiny: {}}\n", "exactly one of"),
        ("labels: [a]\ndata: {image_size: [64]}\n", "data.image_size"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("labels: [a\n", "not valid YAML"),
    ],
)
def test_bad_configs_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_merge_and_validate(tmp_path: Path) -> None:
    path = _write(tmp_path, "labels: [a]\nfusion: {name: hybrid, hidden_dim: 32}\n")
    config = load_config(path, {"fusion": {"name": "late"}})
    assert config.fusion.name == "late" and config.fusion.hidden_dim == 32
    with pytest.raises(ConfigError, match=r"fusion\.bogus: unknown key"):
        load_config(path, {"fusion": {"bogus": 1}})


def test_relative_paths_resolve_against_repo_root() -> None:
    config = load_config(ROOT / "configs" / "chest_xray.yaml")
    assert config.data.manifest == ROOT / "data" / "chest_xray" / "manifest.parquet"


def test_data_source_is_explicit_in_the_shipped_configs(tmp_path: Path) -> None:
    demo, site = load_config(ROOT / "configs" / "demo.yaml"), load_config(ROOT / "configs" / "chest_xray.yaml")
    assert (demo.data.source, demo.data.manifest) == ("demo", None)
    assert site.data.source == "manifest" and site.data.manifest is not None
    path = _write(tmp_path, "labels: [a]\ndata: {source: demo, manifest: m.parquet}\n")
    with pytest.raises(ConfigError, match=r"data: Value error, data\.source is 'demo' but data\.manifest is set"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"data\.source"):
        load_config(_write(tmp_path, "labels: [a]\ndata: {source: synthetic}\n"))
