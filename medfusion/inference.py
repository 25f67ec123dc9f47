"""Score new studies with a saved model folder.

>>> predictor = Predictor.from_dir("runs/demo/training/.../model")
>>> [p] = predictor.predict([StudyInput(image_paths=["a.dcm"], report_text="FINDINGS: ...")])
>>> dict(zip(p.labels, p.probabilities)), p.decisions

Preprocessing (image size, frame policy, report sections, token limit) is read from the folder's
``medfusion_model.json``, so inference matches training. Probabilities are temperature-scaled;
decisions apply the stored per-label thresholds.

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
from typing import Any

import numpy as np
import torch

import medfusion
from medfusion.errors import InputRejected
from medfusion.models.model import LoadedModel, load_model_dir
from medfusion.results import STATUS, decide
from medfusion.training.calibration import apply_temperature
from medfusion.training.data import (
    Collator,
    as_image_tensor,
    image_transform_for,
    input_rejection,
    report_text,
)

log = logging.getLogger(__name__)


@dataclass
class StudyInput:
    """One study to score.

    Attributes:
        image_paths: DICOM files of the study (may be empty: no image).
        report_text: The report (may be ``""``: no report).
    """

    image_paths: list[str] = field(default_factory=list)
    report_text: str = ""


@dataclass
class Prediction:
    """The model's output for one study.

    Attributes:
        labels: Label names.
        probabilities: (L,) temperature-scaled probabilities (NaN when ``error`` is set).
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


class Preprocessor:
    """The CPU side of scoring: a study's files and report -> one model sample.

    Needs only the preprocessing spec stored in the model folder (no weights), so that worker
    processes can build one cheaply with :meth:`from_dir`.

    Args:
        spec: Preprocessing spec (``medfusion_model.json`` ``preprocessing``).
        n_labels: Number of labels (the sample's ``label`` is (L,) NaN).
        uses_image: Whether the model reads images (``text_only`` models never decode them).
    """

    def __init__(self, spec: dict[str, Any], n_labels: int, *, uses_image: bool = True) -> None:
        self.spec = spec
        self.n_labels = n_labels
        self.uses_image = uses_image
        self.transform = image_transform_for(spec, train=False)

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> Preprocessor:
        """Read the spec, labels and fusion's modalities of a model folder (weights are not loaded)."""
        import json

        from medfusion.models.fusion import IMAGE
        from medfusion.models.model import META_FILE
        from medfusion.models.registry import get_fusion

        meta = json.loads((Path(model_dir) / META_FILE).read_text(encoding="utf-8"))
        fusion = get_fusion(meta["config"]["fusion"]["name"])
        return cls(
            dict(meta["preprocessing"]),
            len(meta["labels"]),
            uses_image=IMAGE in fusion.modalities,
        )

    def __call__(self, study: StudyInput) -> dict[str, Any]:
        """Preprocess one study.

        Returns:
            ``{"image": (C, *spatial) float32 or None, "image_present", "report", "text_present",
            "label": (L,) NaN}``.

        Raises:
            InputRejected: The image cannot be read (MONAI's wrapping ``RuntimeError`` is raised as is;
                see :func:`~medfusion.training.data.input_rejection`).
        """
        spec = self.spec
        image = None
        if study.image_paths and self.uses_image:  # text_only never reads images
            image = as_image_tensor(self.transform({"image": [str(p) for p in study.image_paths]})["image"])
            if image.shape[0] != spec["in_channels"]:
                raise InputRejected(
                    study.image_paths[0],
                    f"image has {image.shape[0]} channels, the model expects {spec['in_channels']}",
                )
        report = report_text(study.report_text or "", spec["report_sections"])
        return {
            "image": image,
            "image_present": image is not None,
            "report": report,
            "text_present": bool(report),
            "label": torch.full((self.n_labels,), float("nan")),
        }


class Predictor:
    """Batched scoring with a loaded model folder.

    Args:
        loaded: The model folder, loaded (see :func:`medfusion.models.model.load_model_dir`).
        batch_size: Studies per forward pass.
    """

    def __init__(self, loaded: LoadedModel, batch_size: int = 16, *, amp: bool = False) -> None:
        self.loaded = loaded
        self.batch_size = batch_size
        self.amp = amp and loaded.device.type == "cuda"
        spec = loaded.preprocessing
        self.preprocessor = Preprocessor(spec, len(loaded.labels), uses_image=loaded.model.image_encoder is not None)
        self.transform = self.preprocessor.transform
        self.collate = Collator(
            loaded.tokenizer,
            spec["max_tokens"],
            (spec["in_channels"], *spec["image_size"]),
        )
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
        amp: bool = False,
    ) -> Predictor:
        """Load a model folder written by :func:`medfusion.models.model.save_model_dir`.

        ``amp``: run forward passes under CUDA autocast (float16) when the model is on a GPU.
        """
        return cls(load_model_dir(model_dir, device), batch_size=batch_size, amp=amp)

    @property
    def labels(self) -> list[str]:
        """Label names, in output order."""
        return self.loaded.labels

    def preprocess(self, study: StudyInput) -> dict[str, Any]:
        """CPU side of scoring (see :class:`Preprocessor`); raises :class:`InputRejected` for an unreadable image."""
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
                except (InputRejected, RuntimeError) as err:
                    exc = input_rejection(err)
                    log.warning("study %d not scored: %s", i, exc)
                    results[i] = self.failed(str(exc))
            if samples:
                for i, prediction in zip(positions, self.score_samples(samples)):
                    results[i] = prediction
        return results  # type: ignore[return-value]

    @torch.no_grad()
    def score_samples(self, samples: Sequence[dict[str, Any]]) -> list[Prediction]:
        """Batched forward passes over samples made by :meth:`preprocess`, ``batch_size`` at a time.

        Args:
            samples: Samples (``image`` (C, *spatial) or None, ``report``, ...), in any number.

        Returns:
            One :class:`Prediction` per sample, in order.
        """
        predictions: list[Prediction] = []
        for start in range(0, len(samples), self.batch_size):
            predictions.extend(self._score(list(samples[start : start + self.batch_size])))
        return predictions

    def _score(self, samples: list[dict[str, Any]]) -> list[Prediction]:
        loaded = self.loaded
        batch = {k: v.to(loaded.device, non_blocking=True) for k, v in self.collate(samples).items()}
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=self.amp):
            out = loaded.model(batch)
        probs = apply_temperature(out.logits.float().cpu(), loaded.temperature)  # (B, L)
        modality = {m: v.float().cpu().numpy() for m, v in out.modality_logits.items()}
        weights = {k: v.float().cpu().numpy() for k, v in out.modality_weights.items()}
        lengths = batch["attention_mask"].sum(1).tolist()
        predictions = []
        for b, sample in enumerate(samples):
            attn = tokens = None
            if out.attentions is not None and sample["image_present"] and sample["text_present"]:
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
                    image_present=sample["image_present"],
                    text_present=sample["text_present"],
                    provenance=dict(self.provenance),
                )
            )
        return predictions
