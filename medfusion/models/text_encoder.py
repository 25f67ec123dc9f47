"""Any Hugging Face BERT-family encoder (local folder or hub id) + pooler + projection.

In the manner of open_clip's ``HFTextEncoder``: the transformer's own settings stay in its
``config.json``; medfusion only adds pooling (``cls`` or masked ``mean``) and a linear projection to
``embed_dim``. The real attention mask is always passed, so padding is never attended, and the mask
travels on with the tokens for cross-attention.

The tokenizer is loaded from the same folder or hub id; its saved configuration decides casing.
Loading is offline (``local_files_only=True``) when the path is a local folder or ``HF_HUB_OFFLINE``
is set.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from medfusion.errors import MedfusionError

log = logging.getLogger(__name__)

_TRUE = {"1", "on", "yes", "true"}


@dataclass
class TextFeatures:
    """Output of the text encoder.

    Attributes:
        pooled: (B, D) ``[CLS]`` token or masked mean of the tokens, projected.
        tokens: (B, T, D) projected last hidden states (padding positions hold values; use the mask).
        attention_mask: (B, T) bool, True for real tokens.
    """

    pooled: torch.Tensor
    tokens: torch.Tensor
    attention_mask: torch.Tensor


def offline_for(name_or_path: str | Path) -> bool:
    """Whether loading ``name_or_path`` must not touch the network (local folder, or ``HF_HUB_OFFLINE``)."""
    return Path(name_or_path).is_dir() or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    """Load the tokenizer saved with a text encoder (casing as saved there).

    Raises:
        MedfusionError: It cannot be found or read.
    """
    try:
        return AutoTokenizer.from_pretrained(str(name_or_path), local_files_only=offline_for(name_or_path))
    except (OSError, ValueError) as exc:
        raise MedfusionError(f"{name_or_path}: cannot load the tokenizer: {exc}") from None


def load_transformer(name_or_path: str | Path, *, weights: bool = True) -> PreTrainedModel:
    """Load a Hugging Face encoder with ``AutoModel``.

    Args:
        name_or_path: Local folder or hub id.
        weights: False builds the architecture from ``config.json`` only (random weights), for when
            the weights come from a medfusion ``model.safetensors``.

    Raises:
        MedfusionError: It cannot be found or read.
    """
    offline = offline_for(name_or_path)
    try:
        if weights:
            return AutoModel.from_pretrained(str(name_or_path), local_files_only=offline)
        return AutoModel.from_config(AutoConfig.from_pretrained(str(name_or_path), local_files_only=offline))
    except (OSError, ValueError) as exc:
        raise MedfusionError(f"{name_or_path}: cannot load the text encoder: {exc}") from None


class TextEncoder(nn.Module):
    """Transformer -> (masked) pooling -> linear projection.

    Args:
        transformer: A Hugging Face encoder whose output has ``last_hidden_state`` (B, T, hidden).
        embed_dim: Projected width.
        pooling: ``cls`` (first token) or ``mean`` (mean over real tokens only).
        freeze: Keep the transformer's weights fixed (and its dropout off); the projection still trains.
    """

    def __init__(
        self, transformer: PreTrainedModel, embed_dim: int, pooling: str = "cls", freeze: bool = False
    ) -> None:
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise MedfusionError(f"unknown text pooling {pooling!r}; use 'cls' or 'mean'")
        self.transformer = transformer
        self.proj = nn.Linear(transformer.config.hidden_size, embed_dim)
        self.pooling = pooling
        self.freeze = freeze
        self.embed_dim = embed_dim
        if freeze:
            self.transformer.requires_grad_(False)

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        if self.freeze:
            self.transformer.eval()
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextFeatures:
        mask = attention_mask.bool()  # (B, T)
        hidden = self.transformer(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state  # (B, T, H)
        tokens = self.proj(hidden)  # (B, T, D)
        if self.pooling == "cls":
            pooled = tokens[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(tokens.dtype)  # (B, T, 1)
            pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return TextFeatures(pooled=pooled, tokens=tokens, attention_mask=mask)
