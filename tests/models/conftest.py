"""Shared fixtures: a tiny offline text stack (WordPiece vocabulary + 2-layer BERT, hidden 32)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medfusion.config import TinyBertConfig
from medfusion.models.tokenizer import build_tiny_bert, train_wordpiece_tokenizer

REPORTS = [
    "FINDINGS: Small left pleural Effusion. No pneumothorax.",
    "FINDINGS: No pleural effusion. Fracture of the 5th rib.",
    "INDICATION: Fever and productive cough. FINDINGS: The lungs are clear.",
    "IMPRESSION: Possible right effusion. Heart size normal.",
] * 5


@pytest.fixture(scope="session")
def text_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face folder holding a trained tokenizer and a tiny BERT, as training writes it."""
    out = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = train_wordpiece_tokenizer(REPORTS, vocab_size=120, out_dir=out)
    torch.manual_seed(0)
    build_tiny_bert(tokenizer, TinyBertConfig()).save_pretrained(str(out))
    return out
