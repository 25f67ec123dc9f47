"""The multimodal model, its builder, and the self-describing model folder.

:class:`MedFusionModel` receives already-built parts (TorchMultimodal ``LateFusion`` style): an image
encoder, a text encoder (either may be None for single-modality baselines), a fusion module and an
affine head. Making one is two steps: :func:`build_model` builds the architecture a
:class:`~medfusion.models.card.ModelCard` describes (random weights), then the weights come either from
pretrained files (:func:`load_pretrained`, at the start of training) or from a model folder
(:func:`load_model_dir`).

A model folder (:func:`save_model_dir`) holds everything needed to score new studies in a fresh
process, with no access to the training run or the hub::

    model.safetensors         all weights (encoders, fusion, head)
    medfusion_model.json      the model card (labels, thresholds, calibration, preprocessing, architecture)
    text_encoder/             tokenizer files + the text transformer's config.json
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

import medfusion
from medfusion.errors import MedfusionError
from medfusion.models.calibration import Calibration
from medfusion.models.card import TEXT_DIR, ModelCard, TokenizerInfo
from medfusion.models.convert import Layout
from medfusion.models.fusion import IMAGE, TEXT, Fusion, ModalityEmbedding
from medfusion.models.image_encoders import ImageEncoder, build_image_encoder, load_trunk_weights
from medfusion.models.registry import get_fusion
from medfusion.models.stacking import combine
from medfusion.models.text_encoder import TextEncoder, load_tokenizer, load_transformer
from medfusion.processing.spec import PreprocessingSpec

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"


@dataclass
class FusionModelOutput:
    """Output of :class:`MedFusionModel`.

    Attributes:
        logits: (B, L) label logits (before calibration).
        modality_logits: Modality -> (B, L) that modality's own logits (empty for ``concat``).
        modality_weights: Slot (``joint``/``image``/``text``) -> (B,) weight in the final logits.
        attentions: (B, heads, T_text, N_img) text->image cross-attention (``hybrid``), else None.
        image_grid: Feature grid of the image tokens (``N = prod(grid)``), None without image encoder.
        fused_logits: (B, L) the fusion head's logits before stacking (equal to ``logits`` without it).
        stack_weights: Candidate (``fused``/``image``/``text``) -> (B, L) stacking weight of its logits in
            ``logits`` (absent modality: 0); empty without stacking.
    """

    logits: torch.Tensor
    modality_logits: dict[str, torch.Tensor] = field(default_factory=dict)
    modality_weights: dict[str, torch.Tensor] = field(default_factory=dict)
    attentions: torch.Tensor | None = None
    image_grid: tuple[int, ...] | None = None
    fused_logits: torch.Tensor | None = None
    stack_weights: dict[str, torch.Tensor] = field(default_factory=dict)


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
                raise MedfusionError(
                    f"{type(fusion).__name__} uses {fusion.modalities}; {m} encoder must be given iff used"
                )
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.fusion = fusion
        self.head = head
        self.stacking: torch.Tensor | None  # (L, K) weights over (fused, image, text); not a weight file entry
        self.register_buffer("stacking", None, persistent=False)

    def set_stacking(self, weights: Any) -> None:
        """Use per-label stacking weights (L, 3) over (fused, image, text) logits (None: the fused logits).

        Raises:
            MedfusionError: Weights given for a model without both modality heads.
        """
        if weights is not None and not {IMAGE, TEXT} <= set(self.fusion.modalities):
            raise MedfusionError(f"{type(self.fusion).__name__} has no modality heads to stack")
        device = self.head.weight.device if isinstance(self.head, nn.Linear) else None
        self.stacking = None if weights is None else torch.as_tensor(weights, dtype=torch.float32, device=device)

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
        fused = self.head(out.fused)  # (B, L)
        modality_logits = {m: self.head(f) for m, f in out.modality_features.items()}
        logits, stack_weights = fused, dict[str, torch.Tensor]()
        if self.stacking is not None and len(modality_logits) == 2:
            present = {m: embeddings[m].present for m in modality_logits}
            logits, stack_weights = combine(self.stacking, fused, modality_logits, present)
        return FusionModelOutput(
            logits=logits,
            modality_logits=modality_logits,
            modality_weights=out.weights,
            attentions=out.attentions,
            image_grid=grid,
            fused_logits=fused,
            stack_weights=stack_weights,
        )


def build_model(card: ModelCard, text_dir: str | Path) -> MedFusionModel:
    """Build the architecture a model card describes, with random weights.

    Args:
        card: The model's card (architecture, labels, image size); see
            :meth:`ModelCard.from_config <medfusion.models.card.ModelCard.from_config>` for a new model.
        text_dir: Folder (or hub id) whose ``config.json`` describes the text transformer: the trained
            tiny BERT folder, ``text_encoder.name_or_path``, or a model folder's ``text_encoder/``.
    """
    arch = card.config
    fusion_cls = get_fusion(arch.fusion.name)
    dims = {IMAGE: arch.image_encoder.embed_dim, TEXT: arch.text_encoder.embed_dim}
    image_encoder = text_encoder = None
    if IMAGE in fusion_cls.modalities:
        image_encoder = build_image_encoder(arch.image_encoder, card.preprocessing.image_size)
    if TEXT in fusion_cls.modalities:
        with torch.random.fork_rng(devices=[]):  # the transformer's init never shifts the seeded stream
            transformer = load_transformer(text_dir, weights=False)
        tc = arch.text_encoder
        text_encoder = TextEncoder(transformer, tc.embed_dim, pooling=tc.pooling, freeze=tc.freeze)
    fusion = fusion_cls(arch.fusion, {m: dims[m] for m in fusion_cls.modalities})
    head = nn.Linear(arch.fusion.hidden_dim, len(card.labels))
    model = MedFusionModel(image_encoder, text_encoder, fusion, head)
    if card.stacking is not None:
        model.set_stacking(card.stacking.weights)
    return model


def load_pretrained(
    model: MedFusionModel,
    *,
    image_weights: str | Path | None = None,
    image_layout: Layout = "monai",
    text_source: str | Path | None = None,
) -> MedFusionModel:
    """Load pretrained encoder weights into a freshly built model (the step after :func:`build_model`).

    Args:
        model: The model.
        image_weights: Local weights of the image encoder's MONAI network (``image_encoder.pretrained_path``);
            None keeps the random init. Ignored when the model has no image encoder.
        image_layout: Key layout of ``image_weights`` (``image_encoder.pretrained_layout``): ``monai``, or
            ``torchvision`` / ``xrv`` state dicts mapped by :mod:`medfusion.models.convert`.
        text_source: Folder or hub id of the text transformer's weights (the same ``text_dir`` the model
            was built from); None keeps the random init. Ignored when the model has no text encoder.

    Returns:
        ``model``, its encoders' weights replaced.

    Raises:
        MedfusionError: A file is missing, unreadable, unsafe, or does not fit the architecture.
    """
    if image_weights is not None and model.image_encoder is not None:
        load_trunk_weights(model.image_encoder, image_weights, image_layout)
    if text_source is not None and model.text_encoder is not None:
        with torch.random.fork_rng(devices=[]):
            pretrained = load_transformer(text_source)
        try:
            model.text_encoder.transformer.load_state_dict(pretrained.state_dict())
        except RuntimeError as exc:
            raise MedfusionError(f"{text_source}: text weights do not fit the text encoder: {exc}") from None
    return model


def save_model_dir(model: MedFusionModel, model_dir: str | Path, *, card: ModelCard, tokenizer: Any) -> Path:
    """Write a self-contained model folder (see the module docstring).

    Args:
        model: The trained model.
        model_dir: Folder to write (created; existing files replaced).
        card: The model's card, calibrated (:meth:`~medfusion.models.card.ModelCard.calibrated`);
            ``model_id``, ``created``, ``medfusion_version`` and the tokenizer's description are filled in.
        tokenizer: The Hugging Face tokenizer used in training.

    Returns:
        ``model_dir``.
    """
    model_dir = Path(model_dir)
    (model_dir / TEXT_DIR).mkdir(parents=True, exist_ok=True)
    weights = model_dir / WEIGHTS_FILE
    save_model(model, str(weights))
    tokenizer.save_pretrained(str(model_dir / TEXT_DIR))
    if model.text_encoder is not None:
        model.text_encoder.transformer.config.save_pretrained(str(model_dir / TEXT_DIR))
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    card = card.model_copy(
        update={
            "model_id": f"{card.name}-{digest[:16]}",
            "medfusion_version": medfusion.__version__,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "tokenizer": TokenizerInfo.of(tokenizer, card.tokenizer.source),
        }
    )
    card.save(model_dir)
    log.info("saved model %s to %s", card.model_id, model_dir)
    return model_dir


@dataclass
class LoadedModel:
    """A model folder loaded for inference.

    Attributes:
        model: The model, in eval mode, on ``device``.
        card: The folder's model card.
        tokenizer: The training tokenizer.
        device: Where the model lives.
    """

    model: MedFusionModel
    card: ModelCard
    tokenizer: Any
    device: torch.device

    @property
    def labels(self) -> list[str]:
        """Label names in output order."""
        return list(self.card.labels)

    @property
    def thresholds(self) -> np.ndarray:
        """(L,) float64 decision thresholds on calibrated probabilities."""
        return np.asarray(self.card.thresholds, dtype=np.float64)

    @property
    def calibration(self) -> Calibration:
        """Per-label Platt scaling from logits to probabilities."""
        return self.card.calibration

    @property
    def preprocessing(self) -> PreprocessingSpec:
        """The preprocessing spec the model was trained with."""
        return self.card.preprocessing

    @property
    def model_id(self) -> str:
        """``<name>-<first 16 hex of the weights' SHA-256>``."""
        return self.card.model_id


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
            match its card.
    """
    model_dir = Path(model_dir)
    card = ModelCard.load(model_dir)
    text_dir = model_dir / TEXT_DIR
    model = build_model(card, text_dir)
    try:
        load_model(model, str(model_dir / WEIGHTS_FILE), strict=True)
    except (OSError, RuntimeError, SafetensorError) as exc:
        raise MedfusionError(
            f"{model_dir / WEIGHTS_FILE}: weights do not load into the stored architecture: {exc}"
        ) from None
    tokenizer = load_tokenizer(text_dir)
    expected = card.tokenizer.vocab_size
    if expected is not None and len(tokenizer) != expected:
        raise MedfusionError(f"{text_dir}: tokenizer has {len(tokenizer)} tokens, the model card says {expected}")
    device = resolve_device(device)
    model.to(device).eval()
    return LoadedModel(model=model, card=card, tokenizer=tokenizer, device=device)
