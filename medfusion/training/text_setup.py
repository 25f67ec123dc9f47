"""Where the text encoder of a run comes from.

* ``text_encoder.tiny``: a WordPiece vocabulary is trained on the **train split's** reports only (the
  text the model reads, after section selection), a small BERT is initialised for it, and both are
  saved to ``<out_dir>/text_encoder/``; the run then loads that folder like any pretrained model.
* ``text_encoder.name_or_path``: the folder or hub id is used as it is.

A run whose fusion reads no text (``image_only``) with ``tiny`` trains no vocabulary: its tokenizer holds
the special tokens only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medfusion.config import Config
from medfusion.errors import ConfigError
from medfusion.models.fusion import TEXT
from medfusion.models.registry import get_fusion
from medfusion.models.text_encoder import load_tokenizer
from medfusion.models.tokenizer import build_tiny_bert, special_tokens_tokenizer, train_wordpiece_tokenizer

log = logging.getLogger(__name__)


def prepare_text_encoder(config: Config, train_reports: Sequence[str], out_dir: str | Path) -> tuple[str | Path, Any]:
    """Make the run's text encoder folder available and load its tokenizer.

    Args:
        config: Run configuration.
        train_reports: Report texts of the train split, as the model reads them.
        out_dir: Run folder (the tiny model goes to ``out_dir/text_encoder``).

    Returns:
        ``(text encoder folder or hub id, tokenizer)``.
    """
    tc = config.text_encoder
    if tc.tiny is None:
        if tc.name_or_path is None:  # TextEncoderConfig's validator requires one of the two
            raise ConfigError("text_encoder: set exactly one of 'name_or_path' and 'tiny'")
        return tc.name_or_path, load_tokenizer(tc.name_or_path)
    text_dir = Path(out_dir) / "text_encoder"
    if not reads_text(config):
        special_tokens_tokenizer(text_dir)
        log.debug("%s fusion reads no text: no vocabulary trained", config.fusion.name)
        return text_dir, load_tokenizer(text_dir)
    tokenizer = train_wordpiece_tokenizer(
        train_reports, tc.tiny.vocab_size, text_dir, min_reports=tc.tiny.min_word_reports
    )
    build_tiny_bert(tokenizer, tc.tiny).save_pretrained(str(text_dir))
    log.info("tiny BERT with a %d-token vocabulary (train reports only) saved to %s", len(tokenizer), text_dir)
    return text_dir, load_tokenizer(text_dir)


def reads_text(config: Config) -> bool:
    """Whether the run's fusion uses the report text at all."""
    return TEXT in get_fusion(config.fusion.name).modalities


def warn_if_truncated(tokenizer: Any, texts: Sequence[str], max_tokens: int, threshold: float = 0.05) -> float:
    """Log a warning when more than ``threshold`` of ``texts`` exceed ``max_tokens`` tokens.

    Truncation silently removes the end of a report (often FINDINGS and IMPRESSION), so the model
    never sees the evidence. Returns the truncated fraction.
    """
    texts = [t for t in texts if t]
    if not texts:
        return 0.0
    # verbose=False: these lengths are measured to be truncated, so transformers' "sequence length is
    # longer than the specified maximum" warning would only alarm
    lengths = [len(ids) for ids in tokenizer(list(texts), verbose=False)["input_ids"]]
    fraction = sum(n > max_tokens for n in lengths) / len(lengths)
    if fraction > threshold:
        log.warning(
            "%.0f%% of train reports are longer than data.max_tokens=%d (median %d, max %d tokens) and will be "
            "truncated; raise data.max_tokens or narrow data.report_sections",
            100 * fraction,
            max_tokens,
            sorted(lengths)[len(lengths) // 2],
            max(lengths),
        )
    return fraction


def reuse_text_encoder(config: Config, out_dir: str | Path) -> tuple[str | Path, Any]:
    """The text encoder folder and tokenizer :func:`prepare_text_encoder` made for ``out_dir`` (read only).

    The other ranks of a distributed run read what rank 0 prepared, instead of writing it again.
    """
    tc = config.text_encoder
    if tc.tiny is None:
        if tc.name_or_path is None:
            raise ConfigError("text_encoder: set exactly one of 'name_or_path' and 'tiny'")
        return tc.name_or_path, load_tokenizer(tc.name_or_path)
    text_dir = Path(out_dir) / "text_encoder"
    return text_dir, load_tokenizer(text_dir)
