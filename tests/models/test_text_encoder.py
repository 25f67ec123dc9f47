"""Text encoder: real attention masks, masked pooling, casing from the saved tokenizer, offline loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medfusion.errors import MedfusionError
from medfusion.models.text_encoder import TextEncoder, load_tokenizer, load_transformer, offline_for
from medfusion.models.tokenizer import train_wordpiece_tokenizer
from tests.support.text import REPORTS


def _encoder(text_dir: Path, pooling: str, freeze: bool = False) -> TextEncoder:
    torch.manual_seed(0)
    return TextEncoder(load_transformer(text_dir), embed_dim=16, pooling=pooling, freeze=freeze).eval()


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_padding_is_never_attended(text_dir: Path, pooling: str) -> None:
    tokenizer = load_tokenizer(text_dir)
    encoder = _encoder(text_dir, pooling)
    batch = tokenizer(
        ["no effusion", "small left pleural effusion with fracture of the rib"], padding="longest", return_tensors="pt"
    )
    mask = batch["attention_mask"]
    assert mask[0].sum() < mask.shape[1]  # the first report is padded
    garbage = batch["input_ids"].clone()
    garbage[mask == 0] = torch.randint(5, len(tokenizer), (int((mask == 0).sum()),))
    with torch.no_grad():
        a = encoder(batch["input_ids"], mask)
        b = encoder(garbage, mask)
    real = mask[0].bool()
    assert torch.allclose(a.pooled, b.pooled, atol=1e-6)
    assert torch.allclose(a.tokens[0, real], b.tokens[0, real], atol=1e-6)
    assert a.attention_mask.dtype == torch.bool and torch.equal(a.attention_mask, mask.bool())
    assert a.pooled.shape == (2, 16) and a.tokens.shape == (2, mask.shape[1], 16)


def test_padded_and_unpadded_encodings_agree(text_dir: Path) -> None:
    tokenizer = load_tokenizer(text_dir)
    encoder = _encoder(text_dir, "mean")
    single = tokenizer(["no effusion"], return_tensors="pt")
    padded = tokenizer(
        ["no effusion", "small left pleural effusion with fracture of the rib"], padding="longest", return_tensors="pt"
    )
    with torch.no_grad():
        alone = encoder(single["input_ids"], single["attention_mask"])
        batched = encoder(padded["input_ids"], padded["attention_mask"])
    n = single["input_ids"].shape[1]
    assert torch.allclose(alone.pooled[0], batched.pooled[0], atol=1e-5)
    assert torch.allclose(alone.tokens[0], batched.tokens[0, :n], atol=1e-5)


def test_mean_pooling_uses_real_tokens_only(text_dir: Path) -> None:
    tokenizer = load_tokenizer(text_dir)
    encoder = _encoder(text_dir, "mean")
    batch = tokenizer(["no effusion", "small left pleural effusion"], padding="longest", return_tensors="pt")
    with torch.no_grad():
        out = encoder(batch["input_ids"], batch["attention_mask"])
    real = batch["attention_mask"][0].bool()
    assert torch.allclose(out.pooled[0], out.tokens[0, real].mean(0), atol=1e-6)


@pytest.mark.parametrize("lowercase", [True, False])
def test_casing_comes_from_the_saved_tokenizer(tmp_path: Path, lowercase: bool) -> None:
    train_wordpiece_tokenizer(REPORTS + ["effusion Effusion EFFUSION"] * 3, 150, tmp_path, lowercase=lowercase)
    saved = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert saved["do_lower_case"] is lowercase
    tokenizer = load_tokenizer(tmp_path)  # the path training and inference use
    upper = tokenizer("Pleural Effusion")["input_ids"]
    lower = tokenizer("pleural effusion")["input_ids"]
    assert (upper == lower) is lowercase
    assert tokenizer.convert_ids_to_tokens(tokenizer("x")["input_ids"])[0] == "[CLS]"
    assert tokenizer.pad_token_id == 0


def test_freeze_keeps_transformer_fixed(text_dir: Path) -> None:
    encoder = _encoder(text_dir, "cls", freeze=True).train()
    assert not any(p.requires_grad for p in encoder.transformer.parameters())
    assert all(p.requires_grad for p in encoder.proj.parameters())
    assert not encoder.transformer.training  # dropout stays off


def test_offline_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert offline_for(tmp_path)
    assert not offline_for("microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert offline_for("microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract")
    with pytest.raises(MedfusionError, match="cannot load the text encoder"):
        load_transformer("nobody/no-such-model-medfusion-test")
    with pytest.raises(MedfusionError, match="cannot load the tokenizer"):
        load_tokenizer(tmp_path)  # an empty folder


def test_unknown_pooling_is_refused(text_dir: Path) -> None:
    with pytest.raises(MedfusionError, match="unknown text pooling"):
        TextEncoder(load_transformer(text_dir), 8, pooling="max")


def test_vocabulary_is_deterministic_and_covers_unknown_words(tmp_path: Path) -> None:
    a = train_wordpiece_tokenizer(REPORTS, 60, tmp_path / "a")
    b = train_wordpiece_tokenizer(list(REPORTS), 60, tmp_path / "b")
    assert a.get_vocab() == b.get_vocab()
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
    assert len(a) <= 60
    tokens = a.convert_ids_to_tokens(a("effusion zebra")["input_ids"])
    assert "effusion" in tokens and "[UNK]" not in tokens  # unseen word -> known characters
    with pytest.raises(MedfusionError, match="no non-empty report text"):
        train_wordpiece_tokenizer(["", "  "], 60, tmp_path / "c")
