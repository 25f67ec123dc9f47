"""The study that comes in (:class:`StudyInput`), the model-ready study (:class:`Sample`) and the batch.

A :class:`Sample` is made only by :class:`~medfusion.processing.preprocessor.Preprocessor`; the
:class:`Collator` pads and stacks samples into the batch dict that
:class:`~medfusion.models.model.MedFusionModel` reads::

    image           (B, C, *spatial) float32   zeros where a study has no image
    image_present   (B,) bool
    input_ids       (B, T) int64               padded to the longest sample of the batch
    attention_mask  (B, T) int64               1 for real tokens, 0 for padding
    text_present    (B,) bool                  False for an empty report ([CLS] [SEP] only)
    label           (B, L) float32             NaN = unknown

:meth:`Sample.to_bytes` / :meth:`Sample.from_bytes` carry a sample between processes (the Ray engine)
as one ``.npz`` blob, with no pickle.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medfusion.errors import MedfusionError

#: The batch the model reads (keys in the module docstring).
Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class StudyInput:
    """One study to preprocess.

    Attributes:
        image_paths: DICOM files of the study (may be empty: no image).
        report_text: The report, whole (may be ``""``: no report); sections are chosen by the spec.
        study_uid: StudyInstanceUID (or any study key), carried to the sample; None when unknown.
    """

    image_paths: Sequence[str] = field(default_factory=list)
    report_text: str = ""
    study_uid: str | None = None


@dataclass(frozen=True, eq=False)
class Sample:
    """One study, preprocessed: what the :class:`Collator` batches.

    Attributes:
        image: (C, *spatial) float32, or None when the study has no (usable) image or the model
            reads no images.
        input_ids: (T,) int64 token ids of ``report``, special tokens included, truncated to the
            spec's ``max_tokens``, not padded.
        report: The text the model reads (the spec's sections of the report, casing untouched).
        label: (L,) float32, NaN = unknown (all NaN when scoring).
        study_uid: The study's key, or None.
    """

    image: torch.Tensor | None
    input_ids: torch.Tensor
    report: str
    label: torch.Tensor
    study_uid: str | None = None

    @property
    def image_present(self) -> bool:
        """Whether the sample has an image."""
        return self.image is not None

    @property
    def text_present(self) -> bool:
        """Whether the sample has report text."""
        return bool(self.report)

    def to_bytes(self) -> bytes:
        """The sample as one ``.npz`` blob (no pickle), for :meth:`from_bytes` in another process."""
        arrays: dict[str, np.ndarray] = {
            "input_ids": self.input_ids.numpy().astype(np.int64),
            "label": self.label.numpy().astype(np.float32),
            "report": np.array(self.report),
            "study_uid": np.array(self.study_uid if self.study_uid is not None else ""),
            "has_uid": np.array(self.study_uid is not None),
        }
        if self.image is not None:
            arrays["image"] = self.image.numpy().astype(np.float32)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> Sample:
        """Inverse of :meth:`to_bytes`."""
        with np.load(io.BytesIO(blob), allow_pickle=False) as data:
            return cls(
                image=torch.from_numpy(data["image"].copy()) if "image" in data else None,
                input_ids=torch.from_numpy(data["input_ids"].copy()),
                report=str(data["report"]),
                label=torch.from_numpy(data["label"].copy()),
                study_uid=str(data["study_uid"]) if bool(data["has_uid"]) else None,
            )


@dataclass(frozen=True)
class Collator:
    """Samples -> one batch (see the module docstring).

    Token ids are padded to the longest sample of the batch with ``pad_token_id`` (mask 0), on the
    tokenizer's padding side. Missing images become zeros of the batch's image shape (``image_shape``
    when no sample of the batch has an image).

    Args:
        pad_token_id: The tokenizer's padding id.
        image_shape: ``(C, *spatial)`` used when no sample of a batch has an image.
        padding_side: ``right`` (BERT) or ``left``.
    """

    pad_token_id: int
    image_shape: tuple[int, ...]
    padding_side: str = "right"

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, image_shape: Sequence[int]) -> Collator:
        """The collator matching a Hugging Face tokenizer (its pad id and padding side).

        Raises:
            MedfusionError: The tokenizer has no padding token.
        """
        if tokenizer.pad_token_id is None:
            raise MedfusionError(f"{type(tokenizer).__name__} has no padding token; batches cannot be padded")
        return cls(int(tokenizer.pad_token_id), tuple(int(s) for s in image_shape), str(tokenizer.padding_side))

    def __call__(self, samples: Sequence[Sample]) -> Batch:
        if not samples:
            raise MedfusionError("cannot collate an empty batch")
        longest = max(len(s.input_ids) for s in samples)
        input_ids = torch.full((len(samples), longest), self.pad_token_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(samples), longest), dtype=torch.long)  # (B, T)
        for b, s in enumerate(samples):
            n = len(s.input_ids)
            cols = slice(0, n) if self.padding_side == "right" else slice(longest - n, longest)
            input_ids[b, cols] = s.input_ids
            mask[b, cols] = 1
        present = [s.image for s in samples if s.image is not None]
        shape = tuple(present[0].shape) if present else tuple(self.image_shape)
        images = torch.stack([s.image if s.image is not None else torch.zeros(shape) for s in samples])
        return {
            "image": images,  # (B, C, *spatial)
            "image_present": torch.tensor([s.image_present for s in samples], dtype=torch.bool),
            "input_ids": input_ids,  # (B, T)
            "attention_mask": mask,  # (B, T)
            "text_present": torch.tensor([s.text_present for s in samples], dtype=torch.bool),
            "label": torch.stack([s.label for s in samples]),  # (B, L)
        }
