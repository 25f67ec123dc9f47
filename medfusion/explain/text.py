"""Report token importance: attention rollout and gradient x input, per label.

Both return ``(L, T)`` arrays, ``>= 0``, each label's row scaled to max 1 (an all-zero row stays 0),
over the T tokens the model saw (``[CLS]`` ... ``[SEP]``); special tokens score 0 (they cannot be
highlighted in the report).

* **attention**: attention rollout (Abnar & Zuidema 2020) through the text transformer's layers:
  per layer the head-averaged self-attention plus the identity (the residual), row-normalised, then
  multiplied from the first layer to the last. A token's score is its share of the pooled embedding:
  the ``[CLS]`` row of the rollout (``pooling: cls``) or the mean of the real tokens' rows
  (``pooling: mean``). It has no label axis, so every label gets the same row.
* **gradient**: integrated gradients (Sundararajan et al. 2017) of each label's logit on the word
  embeddings, from zero embeddings to the real ones (the image held fixed): ``|sum_d IG_td|``, how much
  each token's embedding moves that label's logit along the path. (Plain gradient x input was tried
  first and failed a deletion check on the demo model: blanking its top tokens moved the logit less
  than blanking its bottom ones.)
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from medfusion.errors import MedfusionError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from medfusion.models.model import MedFusionModel


def token_spans(tokenizer: Any, text: str, max_tokens: int) -> list[tuple[int, int]]:
    """Character span of each token of ``text`` as the model tokenizes it (``(0, 0)`` for special tokens).

    Args:
        tokenizer: The model's fast tokenizer.
        text: The report text the model reads.
        max_tokens: The model's token limit (truncation as in training).
    """
    enc = tokenizer(
        text, truncation=True, max_length=max_tokens, return_offsets_mapping=True, return_special_tokens_mask=True
    )
    return [
        (0, 0) if special else (int(a), int(b))
        for (a, b), special in zip(enc["offset_mapping"], enc["special_tokens_mask"], strict=True)
    ]


def normalize_rows(scores: torch.Tensor, real: torch.Tensor) -> np.ndarray:
    """(L, T) scores -> ``>= 0``, zero outside ``real`` (T,) bool, each row divided by its max."""
    scores = scores.detach().float().clamp(min=0) * real[None].float()
    peak = scores.max(1, keepdim=True).values
    return (
        torch.where(peak > 0, scores / peak.clamp(min=1e-12), torch.zeros_like(scores)).cpu().numpy().astype(np.float32)
    )


def eager_copy(transformer: PreTrainedModel) -> PreTrainedModel:
    """A copy of a HF transformer with eager attention (SDPA returns no attention weights); eval mode."""
    twin = copy.deepcopy(transformer).eval()
    twin.set_attn_implementation("eager")
    return twin


@torch.no_grad()
def attention_rollout(
    transformer: nn.Module,
    pooling: str,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    real: torch.Tensor,
    n_labels: int,
) -> np.ndarray:
    """Attention rollout scores of one report.

    Args:
        transformer: The text encoder's transformer with eager attention (:func:`eager_copy`).
        pooling: The text encoder's pooling (``cls`` or ``mean``).
        input_ids: (1, T) token ids.
        attention_mask: (1, T) 1 for real tokens.
        real: (T,) bool, non-special tokens (the ones that can score).
        n_labels: L (the scores are the same for every label).

    Returns:
        (L, T) scores.
    """
    out = transformer(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True)
    keep = attention_mask[0].bool()  # (T,)
    t = int(keep.sum())
    rollout = torch.eye(t, device=input_ids.device)
    for layer in out.attentions:  # each (1, heads, T, T)
        a = layer[0].float().mean(0)[keep][:, keep]  # (t, t)
        a = 0.5 * a + 0.5 * torch.eye(t, device=a.device)
        a = a / a.sum(-1, keepdim=True)
        rollout = a @ rollout
    share = rollout[0] if pooling == "cls" else rollout.mean(0)  # (t,)
    scores = torch.zeros(input_ids.shape[1], device=input_ids.device)
    scores[keep] = share
    return normalize_rows(scores[None].expand(n_labels, -1), real)


#: Riemann steps (midpoint rule) of integrated gradients.
IG_STEPS = 16


class ScaledEmbeddings:
    """Context manager: the word embeddings of the forward pass run inside it are scaled per sample.

    Sample ``s`` of the batch gets ``alphas[s] * e`` (``e``: its word embeddings); ``scaled`` is that
    leaf tensor (with grad, also when the transformer is frozen), ``raw`` the unscaled embeddings.
    """

    def __init__(self, transformer: PreTrainedModel, alphas: torch.Tensor) -> None:
        self.module = transformer.get_input_embeddings()
        self.alphas = alphas
        self.raw: torch.Tensor | None = None
        self.scaled: torch.Tensor | None = None

    def _hook(self, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        self.raw = output.detach()  # (S, T, hidden)
        self.scaled = (self.alphas.to(output)[:, None, None] * self.raw).requires_grad_(True)
        return self.scaled

    def __enter__(self) -> ScaledEmbeddings:
        self.handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()


def integrated_gradients(
    model: MedFusionModel,
    batch: dict[str, torch.Tensor],
    real: torch.Tensor,
    steps: int = IG_STEPS,
    on_label: Callable[[int], None] | None = None,
    labels: list[int] | None = None,
) -> np.ndarray:
    """Integrated gradients of each label's logit on the word embeddings of a one-study batch.

    The path runs from zero word embeddings (position and segment embeddings kept) to the real ones;
    the image is held fixed. ``IG_t = |sum_d e_td * mean_s dlogit/de_td(alpha_s e)|`` with midpoint
    ``alpha_s = (s + 1/2) / steps``. It hooks ``model``'s word embeddings for the pass: give it a
    private copy (:class:`medfusion.explain.workspace.Workspace`), never a model other threads use.

    Args:
        model: The fusion model (text encoder required).
        batch: Collated batch of one study, on the model's device.
        real: (T,) bool, non-special tokens.
        steps: Path steps (one batch of ``steps`` copies of the study).
        on_label: Called with each label index before its gradient (may raise to abandon).
        labels: Label indices to compute (default: all); the other rows are 0.

    Returns:
        (L, T) scores.
    """
    if model.text_encoder is None:
        raise MedfusionError("integrated gradients need a model with a text encoder")
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    repeated = {k: v.expand(steps, *v.shape[1:]) for k, v in batch.items()}
    with torch.enable_grad(), ScaledEmbeddings(model.text_encoder.transformer, alphas) as path:
        logits = model(repeated).logits  # (S, L)
        todo = list(range(logits.shape[1])) if labels is None else list(labels)
        rows = torch.zeros(logits.shape[1], batch["input_ids"].shape[1], device=real.device)  # (L, T)
        for n, label in enumerate(todo):
            if on_label is not None:
                on_label(label)
            if path.scaled is None or path.raw is None:
                raise MedfusionError("the word-embedding hook did not run: the model never used its text encoder")
            (grad,) = torch.autograd.grad(logits[:, label].sum(), path.scaled, retain_graph=n + 1 < len(todo))
            rows[label] = (path.raw[0] * grad.mean(0)).sum(-1).abs()  # (T,)
    return normalize_rows(rows, real)


#: Studies per forward pass of the deletion passes (occlusion, deletion curves).
DELETION_BATCH = 32


def delete_tokens(batch: dict[str, torch.Tensor], drops: torch.Tensor) -> dict[str, torch.Tensor]:
    """``V`` copies of a one-study batch, copy ``v`` without the tokens ``drops[v]``.

    The kept tokens move left in order (the report as if the words were never written: later tokens
    take the freed positions); the freed slots at the end become padding (mask 0).

    Args:
        batch: Collated batch of one study (``input_ids``, ``attention_mask`` (1, T), ...).
        drops: (V, T) bool, the tokens to delete from each copy.

    Returns:
        The batch of V copies (other fields repeated).
    """
    n = drops.shape[0]
    ids = batch["input_ids"].expand(n, -1)  # (V, T)
    keep = batch["attention_mask"].bool().expand(n, -1) & ~drops.to(ids.device)
    order = torch.argsort((~keep).int(), dim=1, stable=True)  # kept tokens first, in reading order
    out = {k: v.expand(n, *v.shape[1:]) for k, v in batch.items()}
    out["input_ids"] = ids.gather(1, order)
    out["attention_mask"] = keep.gather(1, order).to(batch["attention_mask"].dtype)
    return out


@torch.no_grad()
def deletion_logits(
    model: nn.Module, batch: dict[str, torch.Tensor], drops: torch.Tensor, chunk: int = DELETION_BATCH
) -> torch.Tensor:
    """Logits (before calibration) of a one-study batch with ``drops[v]`` deleted, per copy.

    Args:
        model: The fusion model (eval mode).
        batch: Collated batch of one study.
        drops: (V, T) bool.
        chunk: Copies per forward pass (bounds memory).

    Returns:
        (V, L) float32 logits on the CPU.
    """
    rows = [
        model(delete_tokens(batch, drops[i : i + chunk])).logits.float().cpu() for i in range(0, drops.shape[0], chunk)
    ]
    return torch.cat(rows) if rows else torch.zeros(0, 0)


#: Most words occlusion scores (a report longer than this in words scores its first ones only).
MAX_OCCLUSION_WORDS = 256


def occlusion(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    word_tokens: list[tuple[int, ...]],
    max_words: int = MAX_OCCLUSION_WORDS,
) -> np.ndarray:
    """Signed word deletion scores: each label's logit drop when one word is deleted from the report.

    ``score[l, w] = logit_l(report) - logit_l(report without word w)``: positive when the word
    supports the label, negative when it speaks against it ("no" in "no effusion"). One forward pass
    per :data:`DELETION_BATCH` words.

    Args:
        model: The fusion model (eval mode).
        batch: Collated batch of one study.
        word_tokens: Token indices of each word (:class:`medfusion.explain.words.Word` ``.tokens``).
        max_words: Words scored (the rest score 0).

    Returns:
        (L, W) float32 raw logit drops.
    """
    n_tokens = batch["input_ids"].shape[1]
    scored = word_tokens[:max_words]
    drops = torch.zeros(len(scored) + 1, n_tokens, dtype=torch.bool)  # row 0: nothing deleted
    for w, tokens in enumerate(scored):
        drops[w + 1, list(tokens)] = True
    logits = deletion_logits(model, batch, drops)  # (1 + W', L)
    out = np.zeros((logits.shape[1], len(word_tokens)), np.float32)
    out[:, : len(scored)] = (logits[0][:, None] - logits[1:].T).numpy()
    return out
