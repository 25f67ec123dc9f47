"""The multimodal model, its builder, and the self-describing model folder.

:class:`MedFusionModel` receives already-built parts (TorchMultimodal ``LateFusion`` style): an image
encoder, a text encoder (either may be None for single-modality baselines), a fusion module and an
affine head. :func:`build_model` makes them from a :class:`~medfusion.config.Config`.

A model folder (:func:`save_model_dir`) holds everything needed to score new studies in a fresh
process, with no access to the training run or the hub::

    model.safetensors         all weights (encoders, fusion, head)
    medfusion_model.json      config, labels, thresholds, temperature, preprocessing spec, model id
    text_encoder/             tokenizer files + the text transformer's config.json
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

import medfusion
from medfusion.config import Config
from medfusion.errors import MedfusionError
from medfusion.models.fusion import IMAGE, TEXT, Fusion, ModalityEmbedding
from medfusion.models.image_encoders import ImageEncoder, build_image_encoder
from medfusion.models.registry import get_fusion
from medfusion.models.text_encoder import TextEncoder, load_tokenizer, load_transformer

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
META_FILE = "medfusion_model.json"
TEXT_DIR = "text_encoder"
FORMAT = "medfusion-model"
FORMAT_VERSION = 1


@dataclass
class FusionModelOutput:
    """Output of :class:`MedFusionModel`.

    Attributes:
        logits: (B, L) label logits (before temperature scaling).
        modality_logits: Modality -> (B, L) that modality's own logits (empty for ``concat``).
        modality_weights: Slot (``joint``/``image``/``text``) -> (B,) weight in the final logits.
        attentions: (B, heads, T_text, N_img) text->image cross-attention (``hybrid``), else None.
        image_grid: Feature grid of the image tokens (``N = prod(grid)``), None without image encoder.
    """

    logits: torch.Tensor
    modality_logits: dict[str, torch.Tensor] = field(default_factory=dict)
    modality_weights: dict[str, torch.Tensor] = field(default_factory=dict)
    attentions: torch.Tensor | None = None
    image_grid: tuple[int, ...] | None = None


class MedFusionModel(nn.Module):
    """Encoders -> fusion -> head.

    Args:
        image_encoder: Image encoder, or None when ``fusion`` does not use images.
        text_encoder: Text encoder, or None when ``fusion`` does not use text.
        fusion: A :class:`~medfusion.models.fusion.Fusion` module.
        head: Affine map ``(B, hidden) -> (B, L)`` (``nn.Linear``); applied to the fused vector and to
            each modality's own slot (see :mod:`medfusion.models.fusion`).
    """

    def __init__(
        self, image_encoder: ImageEncoder | None, text_encoder: TextEncoder | None, fusion: Fusion, head: nn.Module
    ) -> None:
        super().__init__()
        for m, encoder in ((IMAGE, image_encoder), (TEXT, text_encoder)):
            if (m in fusion.modalities) != (encoder is not None):
                raise MedfusionError(f"{type(fusion).__name__} uses {fusion.modalities}; {m} encoder must be given iff used")
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.fusion = fusion
        self.head = head

    def forward(self, batch: dict[str, torch.Tensor]) -> FusionModelOutput:
        """Score a batch.

        Args:
            batch: ``image`` (B, C, H, W) or (B, C, D, H, W); ``input_ids`` and ``attention_mask``
                (B, T); ``image_present`` and ``text_present`` (B,) bool.
        """
        embeddings: dict[str, ModalityEmbedding] = {}
        grid = None
        if self.image_encoder is not None:
            f = self.image_encoder(batch["image"])
            mask = torch.ones(f.tokens.shape[:2], dtype=torch.bool, device=f.tokens.device)  # (B, N)
            embeddings[IMAGE] = ModalityEmbedding(f.pooled, f.tokens, mask, batch["image_present"].bool())
            grid = f.grid
        if self.text_encoder is not None:
            t = self.text_encoder(batch["input_ids"], batch["attention_mask"])
            embeddings[TEXT] = ModalityEmbedding(t.pooled, t.tokens, t.attention_mask, batch["text_present"].bool())
        out = self.fusion(dict(sorted(embeddings.items())))
        return FusionModelOutput(
            logits=self.head(out.fused),  # (B, L)
            modality_logits={m: self.head(f) for m, f in out.modality_features.items()},
            modality_weights=out.weights,
            attentions=out.attentions,
            image_grid=grid,
        )


def build_model(config: Config, tokenizer_dir: str | Path, *, text_weights: bool = True) -> MedFusionModel:
    """Build the model a config describes.

    Args:
        config: Run configuration (encoders, fusion, labels, image size).
        tokenizer_dir: Folder (or hub id) of the text transformer and its tokenizer: the trained tiny
            BERT folder, ``text_encoder.name_or_path``, or a model folder's ``text_encoder/``.
        text_weights: Load the transformer's weights from ``tokenizer_dir``; False builds it from its
            ``config.json`` only (the weights then come from a ``model.safetensors``).
    """
    fusion_cls = get_fusion(config.fusion.name)
    dims = {IMAGE: config.image_encoder.embed_dim, TEXT: config.text_encoder.embed_dim}
    image_encoder = text_encoder = None
    if IMAGE in fusion_cls.modalities:
        image_encoder = build_image_encoder(config.image_encoder, config.data.image_size)
    if TEXT in fusion_cls.modalities:
        tc = config.text_encoder
        transformer = load_transformer(tokenizer_dir, weights=text_weights)
        text_encoder = TextEncoder(transformer, tc.embed_dim, pooling=tc.pooling, freeze=tc.freeze)
    fusion = fusion_cls(config.fusion, {m: dims[m] for m in fusion_cls.modalities})
    head = nn.Linear(config.fusion.hidden_dim, len(config.labels))
    return MedFusionModel(image_encoder, text_encoder, fusion, head)


def preprocessing_spec(config: Config) -> dict[str, Any]:
    """What inference must do to inputs to match training (stored in ``medfusion_model.json``)."""
    d, e = config.data, config.image_encoder
    return {
        "image_size": list(d.image_size),
        "spatial_dims": e.spatial_dims,
        "in_channels": e.in_channels,
        "frame_policy": d.frame_policy,
        "max_pixels": d.max_pixels,
        "max_tokens": d.max_tokens,
        "report_sections": list(d.report_sections),
    }


def save_model_dir(
    model: MedFusionModel,
    model_dir: str | Path,
    *,
    config: Config,
    labels: Sequence[str],
    thresholds: Sequence[float],
    temperature: float,
    tokenizer: Any,
) -> Path:
    """Write a self-contained model folder (see the module docstring).

    Args:
        model: The trained model.
        model_dir: Folder to write (created; existing files replaced).
        config: The run's configuration.
        labels: Label names in output order.
        thresholds: Decision threshold per label, on temperature-scaled probabilities.
        temperature: Temperature dividing the logits before the sigmoid.
        tokenizer: The Hugging Face tokenizer used in training.

    Returns:
        ``model_dir``.
    """
    model_dir = Path(model_dir)
    if len(labels) != len(thresholds):
        raise MedfusionError(f"{len(labels)} labels but {len(thresholds)} thresholds")
    (model_dir / TEXT_DIR).mkdir(parents=True, exist_ok=True)
    weights = model_dir / WEIGHTS_FILE
    save_model(model, str(weights))
    tokenizer.save_pretrained(str(model_dir / TEXT_DIR))
    if model.text_encoder is not None:
        model.text_encoder.transformer.config.save_pretrained(str(model_dir / TEXT_DIR))
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "medfusion_version": medfusion.__version__,
        "model_id": f"{config.name}-{digest[:16]}",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "labels": list(labels),
        "thresholds": [float(t) for t in thresholds],
        "temperature": float(temperature),
        "preprocessing": preprocessing_spec(config),
        "config": config.model_dump(mode="json"),
    }
    (model_dir / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    log.info("saved model %s to %s", meta["model_id"], model_dir)
    return model_dir


@dataclass
class LoadedModel:
    """A model folder loaded for inference.

    Attributes:
        model: The model, in eval mode, on ``device``.
        config: The training configuration.
        labels: Label names in output order.
        thresholds: (L,) decision thresholds on temperature-scaled probabilities.
        temperature: Logit temperature.
        tokenizer: The training tokenizer.
        preprocessing: Preprocessing spec (see :func:`preprocessing_spec`).
        model_id: ``<config name>-<first 16 hex of the weights' SHA-256>``.
        device: Where the model lives.
    """

    model: MedFusionModel
    config: Config
    labels: list[str]
    thresholds: np.ndarray
    temperature: float
    tokenizer: Any
    preprocessing: dict[str, Any]
    model_id: str
    device: torch.device


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as given (``cuda`` without CUDA is an error).

    Raises:
        MedfusionError: A CUDA device is requested but none is available.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MedfusionError(f"device {device} requested but CUDA is not available (use device: auto or cpu)")
    return device


def load_model_dir(model_dir: str | Path, device: str | torch.device = "auto") -> LoadedModel:
    """Load a folder written by :func:`save_model_dir`; never touches the network.

    Raises:
        MedfusionError: The folder is missing, incomplete, of another format, or its weights do not
            match its configuration.
    """
    model_dir = Path(model_dir)
    meta_path = model_dir / META_FILE
    if not meta_path.is_file():
        raise MedfusionError(f"{model_dir}: not a medfusion model folder (no {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MedfusionError(f"{meta_path}: unreadable: {exc}") from None
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise MedfusionError(f"{meta_path}: unsupported format {meta.get('format')!r} v{meta.get('format_version')!r}")
    try:
        config = Config.model_validate(meta["config"])
    except ValidationError as exc:
        raise MedfusionError(f"{meta_path}: stored config is invalid: {exc}") from None
    # Weights come from model.safetensors, not from the original pretrained files.
    config = config.model_copy(update={"image_encoder": config.image_encoder.model_copy(update={"pretrained_path": None})})
    text_dir = model_dir / TEXT_DIR
    model = build_model(config, text_dir, text_weights=False)
    try:
        load_model(model, str(model_dir / WEIGHTS_FILE), strict=True)
    except (OSError, RuntimeError, SafetensorError) as exc:
        raise MedfusionError(f"{model_dir / WEIGHTS_FILE}: weights do not load into the stored architecture: {exc}") from None
    device = resolve_device(device)
    model.to(device).eval()
    return LoadedModel(
        model=model,
        config=config,
        labels=list(meta["labels"]),
        thresholds=np.asarray(meta["thresholds"], dtype=np.float64),
        temperature=float(meta["temperature"]),
        tokenizer=load_tokenizer(text_dir),
        preprocessing=dict(meta["preprocessing"]),
        model_id=str(meta["model_id"]),
        device=device,
    )
