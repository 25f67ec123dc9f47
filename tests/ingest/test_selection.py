"""Series selection rules: which of a study's images a model reads (first matching rule wins), for
2D and 3D, through the config, the model's preprocessing spec and the loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from medfusion.config import DataConfig
from medfusion.datasets.demo.dicom_writer import DicomSpec, write_dicom
from medfusion.errors import DicomReadError
from medfusion.ingest.dicom.read import read_dicom_header
from medfusion.ingest.dicom.selection import SeriesRule, SeriesRuleSet
from medfusion.processing.spec import PreprocessingSpec
from medfusion.processing.transforms import LoadDicomd, image_transforms, input_error

STUDY = "1.2.826.0.1.3680043.8.498.500"


def _image(
    path: Path,
    shape: tuple[int, int],
    *,
    series: str = "1",
    image_type: list[str] | None = None,
    laterality: str | None = None,
    **spec: object,
) -> Path:
    """A DICOM file whose shape tells which one was read; ImageType / ImageLaterality set with pydicom."""
    values: dict[str, object] = {"study_uid": STUDY, "series_uid": f"{STUDY}.{series}", **spec}
    write_dicom(path, np.zeros(shape, np.uint16), DicomSpec(**values))  # type: ignore[arg-type]
    ds = pydicom.dcmread(path)
    if image_type is not None:
        ds.ImageType = image_type
    if laterality is not None:
        ds.ImageLaterality = laterality
    ds.save_as(path)
    return path


def _meta(**values: object) -> dict[str, object]:
    return {"rows": 512, "columns": 512, **values}


def test_rules_match_header_values_case_insensitively_and_missing_tags_fail() -> None:
    rule = SeriesRule(modality=["cr", "DX"], view_position=["pa"], min_rows=256)
    assert rule.matches(_meta(modality="DX", view_position="PA"))
    assert not rule.matches(_meta(modality="CT", view_position="PA"))
    assert not rule.matches(_meta(modality="CR"))  # no ViewPosition
    assert not rule.matches(_meta(modality="CR", view_position="PA", rows=255))
    original = SeriesRule(image_type="original", primary_only=True)
    assert original.matches(_meta(image_type=["ORIGINAL", "PRIMARY", "AXIAL"]))
    assert not original.matches(_meta(image_type=["ORIGINAL", "SECONDARY"]))
    assert not original.matches(_meta(image_type=["DERIVED", "PRIMARY"]))
    assert not original.matches(_meta())  # no ImageType
    assert SeriesRule(image_type="derived").matches(_meta(image_type=["derived", "secondary"]))
    assert SeriesRule(laterality=["L"]).matches(_meta(laterality="l"))
    assert SeriesRule().accepts_anything and not rule.accepts_anything


def test_first_matching_rule_wins_and_no_match_names_the_rule_set(tmp_path: Path) -> None:
    headers = [
        (p, read_dicom_header(p))
        for p in (
            _image(tmp_path / "lat.dcm", (20, 20), view_position="LL", instance_number=1),
            _image(tmp_path / "pa.dcm", (24, 20), view_position="PA", instance_number=3),
            _image(tmp_path / "ap.dcm", (28, 20), view_position="AP", instance_number=2),
        )
    ]
    assert [p.name for p, _ in SeriesRuleSet().select(headers, whole_series=False)] == ["ap.dcm", "pa.dcm"]
    lateral_first = SeriesRuleSet(name="lateral", rules=[SeriesRule(view_position=["LL", "RL"])])
    assert [p.name for p, _ in lateral_first.select(headers, whole_series=False)] == ["lat.dcm"]
    ct_only = SeriesRuleSet(name="ct-only", rules=[SeriesRule(modality=["CT"])])
    with pytest.raises(DicomReadError, match="no series matched rule set 'ct-only'") as caught:
        ct_only.select(headers, whole_series=False)
    assert "3 instance(s) in 1 series; modality CR, view AP/LL/PA" in caught.value.reason


def test_the_loader_reads_the_original_image_not_the_derived_one(tmp_path: Path) -> None:
    derived = _image(tmp_path / "a_sc.dcm", (30, 20), image_type=["DERIVED", "SECONDARY"], instance_number=1)
    original = _image(tmp_path / "b_dx.dcm", (40, 20), image_type=["ORIGINAL", "PRIMARY"], instance_number=2)
    paths = [str(derived), str(original)]
    assert LoadDicomd()({"image": paths})["image"].shape == (1, 30, 20)  # default: the first instance
    rules = SeriesRuleSet(name="acquired", rules=[SeriesRule(image_type="original")])
    assert LoadDicomd(series_rules=rules)({"image": paths})["image"].shape == (1, 40, 20)
    with pytest.raises(DicomReadError, match="no series matched rule set 'acquired'"):
        LoadDicomd(series_rules=rules)({"image": [str(derived)]})
    chain = image_transforms((16, 16), series_rules=rules)  # as scoring runs it: the rejection names the file
    with pytest.raises(RuntimeError) as caught:
        chain({"image": [str(derived)]})
    rejected = input_error(caught.value)
    assert rejected is not None and rejected.source == str(derived)
    assert rejected.reason.startswith("no series matched rule set 'acquired' (1 instance(s) in 1 series")


def test_3d_reads_the_largest_matching_series_not_the_scout(tmp_path: Path) -> None:
    paths = [_image(tmp_path / "scout.dcm", (32, 16), series="9", modality="CT", instance_number=1)]
    paths += [
        _image(tmp_path / f"ax{z}.dcm", (16, 16), series="2", modality="CT", image_position=(0, 0, z)) for z in range(4)
    ]
    volume = LoadDicomd(spatial_dims=3)({"image": [str(p) for p in paths]})["image"]
    assert volume.shape == (1, 4, 16, 16)  # before rules: "inconsistent slice shape" for the whole study


def test_rules_travel_from_the_config_into_the_model_spec(tmp_path: Path) -> None:
    data = DataConfig.model_validate(
        {
            "series_rules": {
                "name": "chest-pa",
                "rules": [
                    {"name": "pa", "modality": ["CR", "DX"], "view_position": ["PA"], "image_type": "original"},
                    {"name": "ap", "view_position": ["AP"]},
                ],
            }
        }
    )
    spec = PreprocessingSpec(image_size=(32, 32), series_rules=data.series_rules)
    again = PreprocessingSpec.from_json(spec.to_json())
    assert again.series_rules == data.series_rules and again.series_rules.rules[0].modality == ("CR", "DX")
    older = {k: v for k, v in spec.to_dict().items() if k != "series_rules"}  # a model card from before rules
    assert PreprocessingSpec.from_dict(older).series_rules == SeriesRuleSet()
    with pytest.raises(ValueError, match="image_type"):
        DataConfig.model_validate({"series_rules": {"rules": [{"image_type": "primary"}]}})
    with pytest.raises(ValueError, match="rules"):
        DataConfig.model_validate({"series_rules": {"name": "empty", "rules": []}})
