"""The normalisation a pretrained trunk expects travels in the spec and is what the preprocessor applies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medfusion.config import Config
from medfusion.datasets.demo.dicom_writer import DicomSpec, write_dicom
from medfusion.models.card import ModelCard
from medfusion.models.tokenizer import train_wordpiece_tokenizer
from medfusion.processing.preprocessor import Preprocessor
from medfusion.processing.spec import PreprocessingSpec, intensity_stats


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, str]:
    root = tmp_path_factory.mktemp("intensity")
    tokenizer = train_wordpiece_tokenizer(["no finding"], 40, root / "tok")
    pixels = np.random.default_rng(0).integers(0, 4000, (32, 32)).astype(np.uint16)
    path = write_dicom(root / "a.dcm", pixels, DicomSpec(study_uid="1.2.3", series_uid="1.2.3.1"))
    return tokenizer, str(path)


def _image(setup: tuple[object, str], intensity: str, channels: int = 1) -> torch.Tensor:
    tokenizer, path = setup
    spec = PreprocessingSpec(image_size=(16, 16), intensity=intensity, in_channels=channels)  # type: ignore[arg-type]
    return Preprocessor(spec, tokenizer, 1).image([path])


def test_fixed_normalisations_are_the_sources(setup: tuple[object, str]) -> None:
    xrv, imagenet, zscore = (_image(setup, i) for i in ("xrv", "imagenet", "zscore"))
    display = xrv / 2048 + 0.5  # the resized display values in [0, 1] behind all three
    assert float(display.min()) >= -1e-6 and float(display.max()) <= 1 + 1e-6 and float(display.std()) > 0.05
    torch.testing.assert_close(xrv, (2 * display - 1) * 1024)  # torchxrayvision: [0, 1] -> [-1024, 1024]
    torch.testing.assert_close(imagenet, (display - 0.449) / 0.226, atol=1e-4, rtol=1e-5)  # grey ImageNet
    torch.testing.assert_close(zscore, (display - display.mean()) / display.std(unbiased=False), atol=1e-3, rtol=0)
    assert intensity_stats("imagenet", 3) == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert intensity_stats("xrv", 3) == ([0.5] * 3, [1 / 2048] * 3) and intensity_stats("zscore", 1) is None


def test_spec_takes_the_layouts_normalisation_and_the_card_keeps_it() -> None:
    def spec(data: dict, encoder: dict) -> PreprocessingSpec:
        return PreprocessingSpec.from_config(Config(labels=["a"], data=data, image_encoder=encoder))

    assert spec({}, {}).intensity == "zscore"
    assert spec({}, {"pretrained_layout": "torchvision"}).intensity == "imagenet"
    assert spec({}, {"pretrained_layout": "xrv"}).intensity == "xrv"
    assert spec({"intensity": "imagenet"}, {}).intensity == "imagenet"  # a converted file: set explicitly
    config = Config(labels=["a"], image_encoder={"pretrained_layout": "xrv", "pretrained_path": Path("/w.pt")})
    card = ModelCard.from_config(config)
    assert card.preprocessing.intensity == "xrv"
    assert ModelCard.from_dict(card.to_dict()).preprocessing.intensity == "xrv"
    assert "pretrained_layout" not in card.to_dict()["config"]["image_encoder"]  # the saved weights are its own
    old = {k: v for k, v in card.preprocessing.to_dict().items() if k != "intensity"}
    assert PreprocessingSpec.from_dict(old).intensity == "zscore"  # cards written before the field
