"""Config validation: every shipped config loads; errors name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from medfusion.config import load_config
from medfusion.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "medfusion" / "configs"  # the shipped configs (package data)


@pytest.mark.parametrize("name", ["demo.yaml", "chest_xray.yaml"])
def test_shipped_configs_are_valid(name: str) -> None:
    config = load_config(CONFIGS / name)
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


def test_shipped_relative_paths_resolve_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(CONFIGS / "chest_xray.yaml")
    assert config.data.manifest == tmp_path / "data" / "chest_xray" / "manifest.parquet"


def test_data_source_is_explicit_in_the_shipped_configs(tmp_path: Path) -> None:
    demo, site = load_config(CONFIGS / "demo.yaml"), load_config(CONFIGS / "chest_xray.yaml")
    assert (demo.data.source, demo.data.manifest) == ("demo", None)
    assert site.data.source == "manifest" and site.data.manifest is not None
    path = _write(tmp_path, "labels: [a]\ndata: {source: demo, manifest: m.parquet}\n")
    with pytest.raises(ConfigError, match=r"data: Value error, data\.source is 'demo' but data\.manifest is set"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"data\.source"):
        load_config(_write(tmp_path, "labels: [a]\ndata: {source: synthetic}\n"))


@pytest.mark.parametrize(
    ("text", "amp", "pos_weight"),
    [
        ("training: {amp: off}", "off", "auto"),
        ("training: {amp: on}", "auto", "auto"),
        ("training: {amp: no, pos_weight: no}", "off", "none"),
        ("training: {amp: yes, pos_weight: yes}", "auto", "auto"),
        ("training: {amp: 'off', pos_weight: none}", "off", "none"),
    ],
)
def test_yaml_booleans_mean_on_and_off_in_enum_fields(tmp_path: Path, text: str, amp: str, pos_weight: str) -> None:
    config = load_config(_write(tmp_path, f"labels: [a]\n{text}\n"))
    assert (config.training.amp, config.training.pos_weight) == (amp, pos_weight)


def test_a_yaml_boolean_with_no_on_off_meaning_still_fails(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"text_encoder\.pooling: .*\(got False\)"):
        load_config(_write(tmp_path, "labels: [a]\ntext_encoder: {tiny: {}, pooling: off}\n"))


def test_set_amp_off_is_off() -> None:
    from medfusion.cli import _parse_overrides

    config = load_config(CONFIGS / "chest_xray.yaml", _parse_overrides(["training.amp=off"]))
    assert config.training.amp == "off"


def test_set_one_exclusive_key_clears_the_other() -> None:
    from medfusion.cli import _parse_overrides

    demo = load_config(CONFIGS / "demo.yaml", _parse_overrides(["text_encoder.name_or_path=/models/bert"]))
    assert (demo.text_encoder.name_or_path, demo.text_encoder.tiny) == ("/models/bert", None)
    assert demo.text_encoder.pooling == "mean"  # the section's other keys stay
    site = load_config(CONFIGS / "chest_xray.yaml", _parse_overrides(["text_encoder.tiny={vocab_size: 99}"]))
    assert site.text_encoder.name_or_path is None and site.text_encoder.tiny is not None
    assert site.text_encoder.tiny.vocab_size == 99
    # data.source: demo and data.manifest exclude each other the same way
    own = load_config(CONFIGS / "demo.yaml", _parse_overrides(["data.manifest=data/m.parquet"]))
    assert (own.data.source, own.data.manifest) == ("manifest", ROOT / "data" / "m.parquet")
    back = load_config(CONFIGS / "chest_xray.yaml", _parse_overrides(["data.source=demo"]))
    assert (back.data.source, back.data.manifest) == ("demo", None)


def test_overrides_of_a_built_config_switch_exclusive_keys_too() -> None:
    from medfusion.training.run import resolve_config

    demo = load_config(CONFIGS / "demo.yaml")
    switched = resolve_config(demo, {"text_encoder": {"name_or_path": "/models/bert"}})
    assert (switched.text_encoder.name_or_path, switched.text_encoder.tiny) == ("/models/bert", None)


def test_both_exclusive_keys_in_one_file_still_fail(tmp_path: Path) -> None:
    from medfusion.cli import _parse_overrides

    path = _write(tmp_path, "labels: [a]\ntext_encoder: {tiny: {}}\n")
    with pytest.raises(ConfigError, match="exactly one of 'name_or_path' and 'tiny'"):
        load_config(path, _parse_overrides(["text_encoder.name_or_path=x", "text_encoder.tiny={}"]))


def test_readme_sections_named_in_configs_exist() -> None:
    import re

    headings = {
        line.lstrip("#").strip() for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("#")
    }
    for config in sorted((CONFIGS).glob("*.yaml")):
        for name in re.findall(r'README(?: section)? "([^"]+)"', config.read_text()):
            assert name in headings, f"{config.name} points at README section {name!r}, which does not exist"


def test_checking_a_configuration_does_not_import_monai() -> None:
    """Every command checks its configuration first (encoder and fusion names against the registry):
    in a fresh interpreter that check leaves MONAI (~6 s of imports) and transformers unloaded, so a
    bad setting or path is answered in seconds."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from medfusion.config import load_config\n"
        f"load_config({str(CONFIGS / 'chest_xray.yaml')!r})\n"
        "print([m for m in ('monai', 'transformers', 'mlflow') if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]
