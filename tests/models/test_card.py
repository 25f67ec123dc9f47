"""The model card: what medfusion_model.json holds (the model's needs, not the run's), and its one loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medfusion.config import Config
from medfusion.errors import MedfusionError
from medfusion.models.calibration import Calibration
from medfusion.models.card import META_FILE, ModelCard, TokenizerInfo
from medfusion.models.model import build_model, load_model_dir, load_pretrained, save_model_dir
from medfusion.models.text_encoder import load_tokenizer

LABELS = ["effusion", "nodule"]
CALIBRATION = Calibration(scale=(0.8, 1.5), bias=(0.1, -0.4))
#: A card written by medfusion's format-2 code (one temperature, 1.25), kept verbatim.
CARD_V2 = Path(__file__).parent / "data" / "card_v2.json"


def _config(tmp_path: Path, **image_encoder: object) -> Config:
    return Config(
        name="card",
        project_dir=tmp_path / "build-machine" / "project",
        labels=LABELS,
        data={"image_size": [32, 32], "max_tokens": 16, "manifest": tmp_path / "build-machine" / "manifest.csv"},
        image_encoder={"name": "vit", "patch_size": 8, "embed_dim": 16, **image_encoder},
        text_encoder={"tiny": {}, "embed_dim": 16},
        fusion={"name": "late", "hidden_dim": 16},
    )


@pytest.fixture()
def saved(tmp_path: Path, text_dir: Path) -> tuple[Path, torch.nn.Module]:
    card = ModelCard.from_config(_config(tmp_path, pretrained_path=tmp_path / "build-machine" / "vit.safetensors"))
    torch.manual_seed(0)
    model = build_model(card, text_dir).eval()
    save_model_dir(
        model, tmp_path / "model", card=card.calibrated([0.3, 0.6], CALIBRATION), tokenizer=load_tokenizer(text_dir)
    )
    return tmp_path / "model", model


def test_card_holds_what_the_model_needs_and_no_build_machine_paths(saved, tmp_path: Path) -> None:
    model_dir, _ = saved
    text = (model_dir / META_FILE).read_text()
    data = json.loads(text)
    assert set(data) == {
        "format",
        "format_version",
        "name",
        "model_id",
        "medfusion_version",
        "created",
        "labels",
        "thresholds",
        "calibration",
        "preprocessing",
        "config",
        "tokenizer",
    }
    assert set(data["config"]) == {"image_encoder", "text_encoder", "fusion"}
    assert data["config"]["text_encoder"] == {"embed_dim": 16, "pooling": "cls", "freeze": False}
    assert data["labels"] == LABELS and data["thresholds"] == [0.3, 0.6] and data["format_version"] == 3
    assert data["calibration"] == {"scale": [0.8, 1.5], "bias": [0.1, -0.4]}
    assert data["tokenizer"]["source"] == "tiny" and data["tokenizer"]["lowercase"] is True
    assert data["tokenizer"]["vocab_size"] == len(load_tokenizer(model_dir / "text_encoder"))
    for leaked in ("project_dir", "pretrained_path", "manifest", "build-machine", str(tmp_path)):
        assert leaked not in text, leaked


def test_card_round_trips_and_loads_typed(saved) -> None:
    model_dir, _ = saved
    card = ModelCard.load(model_dir)
    assert card.labels == tuple(LABELS) and card.thresholds == (0.3, 0.6) and card.calibration == CALIBRATION
    assert card.preprocessing.image_size == (32, 32) and card.config.fusion.name == "late"
    assert card.model_id.startswith("card-") and card.modalities == ("image", "text") and card.uses_image
    assert ModelCard.from_dict(card.to_dict()) == card


def test_format_1_folders_still_load(saved) -> None:
    """A folder written before the card (the whole run config under ``config``) gives the same model."""
    model_dir, model = saved
    v2 = json.loads((model_dir / META_FILE).read_text())
    run = Config(
        name="card",
        labels=LABELS,
        data={"image_size": [32, 32], "max_tokens": 16},
        image_encoder={**v2["config"]["image_encoder"], "pretrained_path": "/elsewhere/vit.safetensors"},
        text_encoder={"tiny": {}, "embed_dim": 16},
        fusion=v2["config"]["fusion"],
    )
    kept = ("medfusion_version", "model_id", "created", "labels", "thresholds", "preprocessing")
    v1 = {k: v2[k] for k in kept}
    v1 |= {"format": "medfusion-model", "format_version": 1, "config": run.model_dump(mode="json"), "temperature": 2.0}
    (model_dir / META_FILE).write_text(json.dumps(v1))
    loaded = load_model_dir(model_dir, "cpu")
    assert loaded.card.name == "card" and loaded.card.config == ModelCard.from_dict(v2).config
    assert loaded.labels == LABELS and loaded.thresholds.tolist() == [0.3, 0.6]
    assert loaded.calibration == Calibration(scale=(0.5, 0.5), bias=(0.0, 0.0))  # T = 2 for every label
    x = {
        "image": torch.randn(2, 1, 32, 32),
        "input_ids": torch.tensor([[2, 7, 3], [2, 3, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
        "image_present": torch.tensor([True, False]),
        "text_present": torch.tensor([True, False]),
    }
    with torch.no_grad():
        assert torch.equal(loaded.model(x).logits, model(x).logits)


def test_broken_cards_are_clear_errors(saved) -> None:
    model_dir, _ = saved
    meta = model_dir / META_FILE
    good = json.loads(meta.read_text())
    fusion = good["config"]["fusion"]
    for change, message in [
        ({"format_version": 7}, "unsupported format 'medfusion-model' v7"),
        ({"thresholds": [0.5]}, "2 labels but 1 thresholds"),
        ({"calibration": {"scale": [1.0], "bias": [0.0]}}, "2 labels but calibration for 1"),
        ({"calibration": {"scale": [0.0, 1.0], "bias": [0.0, 0.0]}}, "scales must be positive and finite"),
        ({"preprocessing": {**good["preprocessing"], "frame_policy": "last"}}, "frame_policy"),
        ({"config": {**good["config"], "fusion": {**fusion, "name": "nope"}}}, "unknown fusion 'nope'"),
        ({"tokenizer": {**good["tokenizer"], "vocab_size": 3}}, "tokenizer has .* tokens, the model card says 3"),
    ]:
        meta.write_text(json.dumps(good | change))
        with pytest.raises(MedfusionError, match=message):
            load_model_dir(model_dir, "cpu")
    meta.write_text("[1, 2]")
    with pytest.raises(MedfusionError, match="expected a JSON object"):
        ModelCard.load(model_dir)


def test_build_is_architecture_only_and_pretrained_weights_are_a_separate_step(tmp_path: Path, text_dir: Path) -> None:
    saved = load_file(str(text_dir / "model.safetensors"))
    key = next(k for k in saved if k.endswith("word_embeddings.weight"))
    card = ModelCard.from_config(_config(tmp_path))
    model = build_model(card, text_dir)
    embeddings = model.text_encoder.transformer.embeddings.word_embeddings.weight
    assert not torch.equal(embeddings, saved[key])  # random init from config.json only
    before = {k: v.clone() for k, v in model.fusion.state_dict().items()}
    load_pretrained(model, text_source=text_dir)
    assert torch.equal(model.text_encoder.transformer.embeddings.word_embeddings.weight, saved[key])
    assert all(torch.equal(v, model.fusion.state_dict()[k]) for k, v in before.items())  # only the encoder changed


def test_calibrated_checks_its_inputs(tmp_path: Path) -> None:
    card = ModelCard.from_config(_config(tmp_path))
    assert card.thresholds == (0.5, 0.5) and card.calibration == Calibration.identity(2)
    assert card.tokenizer == TokenizerInfo(source="tiny")
    with pytest.raises(MedfusionError, match="2 labels but 3 thresholds"):
        card.calibrated([0.1, 0.2, 0.3], CALIBRATION)
    with pytest.raises(MedfusionError, match="2 labels but calibration for 3"):
        card.calibrated([0.1, 0.2], Calibration.identity(3))


def test_format_2_card_with_a_temperature_loads_as_per_label_scales(tmp_path: Path) -> None:
    """A format-2 card's one temperature T becomes scale 1/T and bias 0 for every label: same probabilities."""
    v2 = json.loads(CARD_V2.read_text())
    assert v2["format_version"] == 2 and v2["temperature"] == 1.25 and "calibration" not in v2
    (tmp_path / META_FILE).write_text(CARD_V2.read_text())
    card = ModelCard.load(tmp_path)
    assert card.calibration == Calibration(scale=(0.8, 0.8), bias=(0.0, 0.0))
    assert card.labels == tuple(LABELS) and card.thresholds == (0.3, 0.6) and card.model_id == "card-0123456789abcdef"
    logits = torch.tensor([[-2.0, 0.5], [3.0, -1.0]])
    assert card.calibration.probabilities(logits) == pytest.approx(torch.sigmoid(logits.double() / 1.25).numpy())
    again = ModelCard.from_dict(card.to_dict())  # written back as format 3
    assert again == card and card.to_dict()["format_version"] == 3 and "temperature" not in card.to_dict()
    assert ModelCard.from_dict({k: v for k, v in v2.items() if k != "temperature"}).calibration == Calibration.identity(
        2
    )
    for bad in (0.0, -1.0, "warm", None):
        with pytest.raises(MedfusionError, match="temperature must be"):
            ModelCard.from_dict(v2 | {"temperature": bad}, source="old card")
