"""The assembled model: forward contract, and the self-describing model folder round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medfusion.config import Config
from medfusion.errors import MedfusionError
from medfusion.models.calibration import Calibration
from medfusion.models.card import ModelCard
from medfusion.models.model import FusionModelOutput, build_model, load_model_dir, save_model_dir
from medfusion.models.text_encoder import load_tokenizer

LABELS = ["effusion", "nodule", "pneumonia"]
ALL = ["image_only", "text_only", "late", "concat", "gated", "hybrid"]


def _card(fusion: str, encoder: str = "vit") -> ModelCard:
    return ModelCard.from_config(_config(fusion, encoder))


def _config(fusion: str, encoder: str = "vit") -> Config:
    return Config(
        name="test",
        labels=LABELS,
        data={"image_size": [32, 32], "max_tokens": 16},
        image_encoder={"name": encoder, "patch_size": 8, "embed_dim": 16},
        text_encoder={"tiny": {}, "embed_dim": 16},
        fusion={"name": fusion, "hidden_dim": 16, "num_heads": 2},
    )


def _batch(text_dir: Path) -> dict[str, torch.Tensor]:
    tokenizer = load_tokenizer(text_dir)
    enc = tokenizer(
        ["Small left effusion.", "", "No effusion. Fever.", "fracture"], padding="longest", return_tensors="pt"
    )
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.randn(4, 1, 32, 32, generator=g),
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "image_present": torch.tensor([True, True, False, False]),
        "text_present": torch.tensor([True, False, True, False]),
    }


@pytest.mark.parametrize("fusion", ALL)
def test_forward_contract(text_dir: Path, fusion: str) -> None:
    torch.manual_seed(0)
    model = build_model(_card(fusion), text_dir).eval()
    assert (model.image_encoder is None) == (fusion == "text_only")
    assert (model.text_encoder is None) == (fusion == "image_only")
    with torch.no_grad():
        out = model(_batch(text_dir))
    assert isinstance(out, FusionModelOutput)
    assert out.logits.shape == (4, len(LABELS)) and torch.isfinite(out.logits).all()
    assert out.image_grid == (None if fusion == "text_only" else (4, 4))
    if fusion == "hybrid":
        assert out.attentions.shape[:2] == (4, 2) and out.attentions.shape[3] == 16
    else:
        assert out.attentions is None
    if out.modality_logits and fusion != "concat":
        # the logits are exactly the weighted average of the slots' own logits (affine head)
        names = [k for k in out.modality_weights if k in out.modality_logits]
        if len(names) == len(out.modality_weights):
            mixed = sum(out.modality_weights[k][:, None] * out.modality_logits[k] for k in names)
            assert torch.allclose(mixed, out.logits, atol=1e-5)


@pytest.mark.parametrize("fusion", ALL)
def test_save_load_round_trip_gives_identical_logits(tmp_path: Path, text_dir: Path, fusion: str) -> None:
    torch.manual_seed(0)
    card = _card(fusion)
    model = build_model(card, text_dir).eval()
    batch = _batch(text_dir)
    with torch.no_grad():
        expected = model(batch)
    calibration = Calibration(scale=(0.5, 1.0, 2.0), bias=(-1.0, 0.0, 0.25))
    calibrated = card.calibrated([0.2, 0.5, 0.7], calibration)
    save_model_dir(model, tmp_path / "model", card=calibrated, tokenizer=load_tokenizer(text_dir))
    loaded = load_model_dir(tmp_path / "model", device="cpu")
    with torch.no_grad():
        got = loaded.model(batch)
    assert torch.equal(got.logits, expected.logits)
    for m in expected.modality_logits:
        assert torch.equal(got.modality_logits[m], expected.modality_logits[m])
    assert loaded.labels == LABELS and loaded.calibration == calibration
    assert loaded.thresholds.tolist() == [0.2, 0.5, 0.7]
    assert loaded.preprocessing.image_size == (32, 32) and loaded.preprocessing.max_tokens == 16
    assert loaded.model_id.startswith("test-")
    assert not loaded.model.training


def test_model_folder_is_self_contained(tmp_path: Path, text_dir: Path) -> None:
    card = _card("hybrid", encoder="densenet121")
    model = build_model(card, text_dir).eval()
    save_model_dir(model, tmp_path, card=card, tokenizer=load_tokenizer(text_dir))
    meta = json.loads((tmp_path / "medfusion_model.json").read_text())
    assert meta["labels"] == LABELS and meta["preprocessing"]["frame_policy"] == "middle"
    assert meta["preprocessing"]["report_sections"] == ["full"]
    assert meta["config"]["fusion"]["name"] == "hybrid"
    for name in (
        "model.safetensors",
        "text_encoder/config.json",
        "text_encoder/tokenizer.json",
        "text_encoder/tokenizer_config.json",
    ):
        assert (tmp_path / name).is_file(), name
    assert not (tmp_path / "text_encoder" / "model.safetensors").exists()  # weights live once, in model.safetensors
    with torch.no_grad():
        batch = _batch(text_dir)
        assert torch.equal(load_model_dir(tmp_path, "cpu").model(batch).logits, model(batch).logits)


def test_load_errors_are_clear(tmp_path: Path, text_dir: Path) -> None:
    with pytest.raises(MedfusionError, match="not a medfusion model folder"):
        load_model_dir(tmp_path)
    card = _card("late")
    save_model_dir(build_model(card, text_dir), tmp_path, card=card, tokenizer=load_tokenizer(text_dir))
    meta_path = tmp_path / "medfusion_model.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["fusion"]["name"] = "gated"  # architecture no longer matches the weights
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(MedfusionError, match="weights do not load"):
        load_model_dir(tmp_path, "cpu")
    with pytest.raises(MedfusionError, match="3 labels but 2 thresholds"):
        save_model_dir(
            build_model(card, text_dir),
            tmp_path / "x",
            card=card.calibrated([0.5] * 2, Calibration.identity(3)),
            tokenizer=load_tokenizer(text_dir),
        )
