"""A model folder with random weights at a config's full size, for speed and memory benchmarks only.

``configs/chest_xray.yaml`` names DenseNet121 at 224x224 and a BERT-base text encoder from the model
hub; nothing can be downloaded here and speed does not depend on the weights. This script builds the
config's architecture with random weights and a BERT-base-shaped transformer (768 wide, 12 layers,
12 heads, 3,072 feed-forward; the sizes of BiomedBERT-base) whose WordPiece vocabulary is built from
the given report texts, and writes a normal model folder (:func:`medfusion.models.model.save_model_dir`)
that ``benchmarks/scoring.py --model`` and ``medfusion score --model`` load like any other.

Its predictions mean nothing: never register or promote it.

    python benchmarks/random_model.py --config chest_xray --out /tmp/densenet_bert_base
    python benchmarks/scoring.py --archive realistic --archive-dir /tmp/arch --model /tmp/densenet_bert_base
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import BertConfig, BertModel

from medfusion.models.card import ModelCard
from medfusion.models.model import build_model, save_model_dir
from medfusion.models.tokenizer import train_wordpiece_tokenizer
from medfusion.training.run import resolve_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realistic_archive import REPORTS

#: BERT-base sizes (BiomedBERT-base, Bio_ClinicalBERT): hidden, layers, heads, feed-forward.
BERT_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}


def bert_base_folder(out: Path, texts: list[str], max_positions: int = 512) -> Any:
    """A BERT-base-shaped transformer with random weights and a WordPiece tokenizer of ``texts``, saved to
    ``out``; returns the tokenizer."""
    tokenizer = train_wordpiece_tokenizer(texts, vocab_size=30522, out_dir=out)
    tokenizer.model_max_length = max_positions
    tokenizer.save_pretrained(str(out))
    config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=max_positions, **BERT_BASE)
    BertModel(config, add_pooling_layer=False).save_pretrained(str(out))
    return tokenizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="chest_xray", help="Shipped config name or YAML path.")
    parser.add_argument("--out", type=Path, required=True, help="Model folder to write.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="medfusion-bert-base-") as tmp:
        text_dir = Path(tmp)
        tokenizer = bert_base_folder(text_dir, list(REPORTS))
        config = resolve_config(args.config, {"text_encoder": {"name_or_path": str(text_dir), "tiny": None}})
        card = ModelCard.from_config(config)
        model = build_model(card, text_dir).eval()
        save_model_dir(model, args.out, card=card, tokenizer=tokenizer)
    n = sum(p.numel() for p in model.parameters())
    size = list(config.data.image_size)
    print(f"wrote {args.out}: {config.image_encoder.name} {size} + BERT-base text, {n / 1e6:.1f} M parameters")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
