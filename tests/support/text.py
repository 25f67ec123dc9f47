"""A tiny offline text stack: a WordPiece vocabulary trained on a few reports and a 2-layer BERT (hidden 32)."""

from __future__ import annotations

from pathlib import Path

import torch

from medfusion.config import TinyBertConfig
from medfusion.models.tokenizer import build_tiny_bert, train_wordpiece_tokenizer

#: The reports the tiny vocabulary is trained on.
REPORTS = [
    "FINDINGS: Small left pleural Effusion. No pneumothorax.",
    "FINDINGS: No pleural effusion. Fracture of the 5th rib.",
    "INDICATION: Fever and productive cough. FINDINGS: The lungs are clear.",
    "IMPRESSION: Possible right effusion. Heart size normal.",
] * 5


def write_tiny_text_dir(out: Path) -> Path:
    """Write a Hugging Face folder (tokenizer + seeded tiny BERT) into ``out``, as training writes it."""
    tokenizer = train_wordpiece_tokenizer(REPORTS, vocab_size=120, out_dir=out)
    torch.manual_seed(0)
    build_tiny_bert(tokenizer, TinyBertConfig()).save_pretrained(str(out))
    return out
