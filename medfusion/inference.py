"""Score new studies with a saved model folder.

>>> predictor = Predictor.from_dir("runs/demo/training/.../model")
>>> [p] = predictor.predict([StudyInput(image_paths=["a.dcm"], report_text="FINDINGS: ...")])
>>> dict(zip(p.labels, p.probabilities)), p.decisions

Preprocessing (image size, frame policy, report sections, token limit) is the folder's model card's
:class:`~medfusion.processing.spec.PreprocessingSpec`, applied by the same
:class:`~medfusion.processing.preprocessor.Preprocessor` as in training, so inference matches training.
Probabilities are calibrated (the card's per-label Platt scaling); decisions apply the stored per-label thresholds.

A study may lack its image (``image_paths=[]``) or its report (``report_text=""``): the model's
missing-modality path scores it. A study whose image cannot be read (a typed
:class:`~medfusion.errors.InputRejected`, e.g. a broken DICOM) does not stop the batch: its
:class:`Prediction` has ``error`` set (the reason, free of patient data) and NaN probabilities; the
caller decides what to do with it. Any other exception is a bug and propagates.

Every prediction carries provenance (model id, medfusion version) and the status ``UNVERIFIED``:
these are research outputs, not clinical findings.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import medfusion
from medfusion.errors import InputRejected
from medfusion.models.card import TEXT_DIR, ModelCard
from medfusion.models.model import LoadedModel, load_model_dir
from medfusion.models.text_encoder import load_tokenizer
from medfusion.precision import resolve_amp
from medfusion.processing.preprocessor import Preprocessor
from medfusion.processing.sample import Collator, Sample, StudyInput
from medfusion.results import STATUS, decide

log = logging.getLogger(__name__)

__all__ = ["STATUS", "Prediction", "Predictor", "StudyInput", "load_preprocessor"]


@dataclass
class Prediction:
    """The model's output for one study.

    Attributes:
        labels: Label names.
        probabilities: (L,) calibrated probabilities (NaN when ``error`` is set).
        thresholds: (L,) the thresholds used.
        modality_logits: Modality -> (L,) that modality's own logits (empty for ``concat``).
        modality_weights: Slot (``joint``/``image``/``text``) -> weight of that slot in the logits.
        attentions: (heads, T, N) text->image attention over the real tokens (``hybrid``), else None.
        tokens: The T tokens of the attention rows (``[CLS]`` ... ``[SEP]``), or None.
        image_grid: Image token grid (``N = prod(grid)``), or None.
        image_present: Whether an image was used.
        text_present: Whether report text was used.
        provenance: ``model_id``, ``medfusion_version`` and ``status`` (``UNVERIFIED``).
        error: Why the study could not be scored, or None.
    """

    labels: list[str]
    probabilities: np.ndarray
    thresholds: np.ndarray
    modality_logits: dict[str, np.ndarray] = field(default_factory=dict)
    modality_weights: dict[str, float] = field(default_factory=dict)
    attentions: np.ndarray | None = None
    tokens: list[str] | None = None
    image_grid: tuple[int, ...] | None = None
    image_present: bool = False
    text_present: bool = False
    provenance: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def decisions(self) -> np.ndarray:
        """(L,) bool: :func:`medfusion.results.decide` (all False when ``error`` is set)."""
        return decide(self.probabilities, self.thresholds)


def _preprocessor(card: ModelCard, tokenizer: object) -> Preprocessor:
    return Preprocessor(card.preprocessing, tokenizer, len(card.labels), uses_image=card.uses_image)


def load_preprocessor(model_dir: str | Path) -> Preprocessor:
    """The CPU side of scoring for a model folder: its card's spec and its tokenizer, no weights.

    Worker processes build one cheaply; its samples go to :meth:`Predictor.score_samples`.

    Raises:
        MedfusionError: Not a model folder, or its card or tokenizer cannot be read.
    """
    card = ModelCard.load(model_dir)
    return _preprocessor(card, load_tokenizer(Path(model_dir) / TEXT_DIR))


class Predictor:
    """Batched scoring with a loaded model folder.

    Args:
        loaded: The model folder, loaded (see :func:`medfusion.models.model.load_model_dir`).
        batch_size: Studies per forward pass.
        amp: Mixed precision of the forward passes (:mod:`medfusion.precision`); ``off``: float32.

    Raises:
        ConfigError: ``amp`` is unknown, or ``fp16`` on a CPU model.
    """

    def __init__(self, loaded: LoadedModel, batch_size: int = 16, *, amp: str = "off") -> None:
        self.loaded = loaded
        self.batch_size = batch_size
        self.amp_dtype, _ = resolve_amp(amp, loaded.device)  # None: float32 forward passes
        self.preprocessor = _preprocessor(loaded.card, loaded.tokenizer)
        self.collate = Collator.for_tokenizer(loaded.tokenizer, loaded.preprocessing.image_shape)
        self.provenance = {
            "model_id": loaded.model_id,
            "medfusion_version": medfusion.__version__,
            "status": STATUS,
        }

    @classmethod
    def from_dir(
        cls,
        model_dir: str | Path,
        device: str = "auto",
        batch_size: int = 16,
        *,
        amp: str = "off",
    ) -> Predictor:
        """Load a model folder written by :func:`medfusion.models.model.save_model_dir`.

        ``amp``: the forward passes' mixed precision (:mod:`medfusion.precision`; ``auto``: bfloat16 on a
        GPU that supports it, else float16; float32 on CPU).
        """
        return cls(load_model_dir(model_dir, device), batch_size=batch_size, amp=amp)

    @property
    def labels(self) -> list[str]:
        """Label names, in output order."""
        return self.loaded.labels

    def preprocess(self, study: StudyInput) -> Sample:
        """CPU side of scoring (the model's :class:`~medfusion.processing.preprocessor.Preprocessor`).

        Raises:
            InputRejected: The study's image cannot be read.
        """
        return self.preprocessor(study)

    def failed(self, reason: str) -> Prediction:
        """The prediction of a study that could not be scored: NaN probabilities, ``error`` = ``reason``."""
        n = len(self.labels)
        return Prediction(
            labels=list(self.labels),
            probabilities=np.full(n, np.nan),
            thresholds=self.loaded.thresholds.copy(),
            provenance=dict(self.provenance),
            error=reason,
        )

    @torch.no_grad()
    def predict(self, inputs: Sequence[StudyInput]) -> list[Prediction]:
        """Score studies, in order; one :class:`Prediction` per input (``error`` set for unreadable ones)."""
        results: list[Prediction | None] = [None] * len(inputs)
        for start in range(0, len(inputs), self.batch_size):
            chunk = range(start, min(start + self.batch_size, len(inputs)))
            samples, positions = [], []
            for i in chunk:
                try:
                    samples.append(self.preprocess(inputs[i]))
                    positions.append(i)
                except InputRejected as exc:
                    log.warning("study %d not scored: %s", i, exc)
                    results[i] = self.failed(str(exc))
            if samples:
                for i, prediction in zip(positions, self.score_samples(samples), strict=True):
                    results[i] = prediction
        return results  # type: ignore[return-value]

    @torch.no_grad()
    def score_samples(self, samples: Sequence[Sample]) -> list[Prediction]:
        """Batched forward passes over samples made by :meth:`preprocess`, ``batch_size`` at a time.

        Args:
            samples: Samples of this model's preprocessor, in any number.

        Returns:
            One :class:`Prediction` per sample, in order.
        """
        predictions: list[Prediction] = []
        for start in range(0, len(samples), self.batch_size):
            predictions.extend(self._score(list(samples[start : start + self.batch_size])))
        return predictions

    def _score(self, samples: list[Sample]) -> list[Prediction]:
        loaded = self.loaded
        batch = {k: v.to(loaded.device, non_blocking=True) for k, v in self.collate(samples).items()}
        with torch.autocast(
            loaded.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        ):
            out = loaded.model(batch)
        probs = loaded.calibration.probabilities(out.logits.float().cpu())  # (B, L)
        modality = {m: v.float().cpu().numpy() for m, v in out.modality_logits.items()}
        weights = {k: v.float().cpu().numpy() for k, v in out.modality_weights.items()}
        lengths = batch["attention_mask"].sum(1).tolist()
        predictions = []
        for b, sample in enumerate(samples):
            attn = tokens = None
            if out.attentions is not None and sample.image_present and sample.text_present:
                t = int(lengths[b])
                attn = out.attentions[b, :, :t].float().cpu().numpy()  # (heads, T, N)
                tokens = loaded.tokenizer.convert_ids_to_tokens(batch["input_ids"][b, :t].tolist())
            predictions.append(
                Prediction(
                    labels=list(self.labels),
                    probabilities=probs[b],
                    thresholds=loaded.thresholds.copy(),
                    modality_logits={m: v[b] for m, v in modality.items()},
                    modality_weights={k: float(v[b]) for k, v in weights.items()},
                    attentions=attn,
                    tokens=tokens,
                    image_grid=out.image_grid,
                    image_present=sample.image_present,
                    text_present=sample.text_present,
                    provenance=dict(self.provenance),
                )
            )
        return predictions
