"""Study records -> tensors: a cached torch Dataset and a tokenizing collate function.

Records are the MONAI-style dicts of :func:`medfusion.data.manifest.rows_to_records`:
``{"image": [paths], "report": str, "label": (L,) float32 with NaN = unknown, "meta": {...}}``.

Images go through the MONAI dict transform of :func:`medfusion.data.transforms.image_transforms`
(key ``"image"``: path(s) -> ``(C, H, W)``). Everything before its first random transform (decoding,
frame selection, resizing) runs once per study and is kept in memory; only the random augmentations
run every epoch. A study whose image cannot be read (:class:`~medfusion.errors.InputRejected`) is
logged, listed in :attr:`StudyDataset.rejected`, and used as a study without image (MONAI's
``Compose`` re-raises transform errors as ``RuntimeError``; the typed error behind it is recovered).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from medfusion.config import Config
from medfusion.data.records import Rejection, Report
from medfusion.data.sections import select_sections
from medfusion.errors import InputRejected

log = logging.getLogger(__name__)


def image_transform_for(config: Config | dict, *, train: bool) -> Callable[[dict], dict]:
    """The MONAI image transform for a config (or a stored preprocessing spec), train or eval flavour."""
    from medfusion.data.transforms import image_transforms

    spec = preprocessing_of(config)
    return image_transforms(
        tuple(spec["image_size"]),
        frame_policy=spec["frame_policy"],
        spatial_dims=spec["spatial_dims"],
        train=train,
        max_pixels=spec["max_pixels"],
    )


def preprocessing_of(config: Config | dict) -> dict[str, Any]:
    """Preprocessing spec of a config, or the spec itself (from ``medfusion_model.json``)."""
    if isinstance(config, dict):
        return config
    from medfusion.models.model import preprocessing_spec

    return preprocessing_spec(config)


def report_text(report: str, sections: Sequence[str]) -> str:
    """The part of a report the model reads (``data.report_sections``); casing untouched."""
    if not report or not report.strip():
        return ""
    return select_sections(Report(text=report), list(sections)).strip()


class StudyDataset(Dataset):
    """Records -> samples ``{"image", "image_present", "report", "text_present", "label"}``.

    Args:
        records: Study records (see the module docstring).
        image_transform: MONAI ``Compose`` over dict records (key ``"image"``), or None to ignore images.
        report_sections: Sections of the report to keep (``["full"]`` for all of it).
        in_channels: Channels the model expects; other channel counts are rejected.
        cache: Run the deterministic head of ``image_transform`` once per study, at construction.
    """

    def __init__(
        self,
        records: Sequence[dict[str, Any]],
        image_transform: Callable[[dict], dict] | None,
        *,
        report_sections: Sequence[str] = ("full",),
        in_channels: int = 1,
        cache: bool = True,
    ) -> None:
        self.records = list(records)
        self.transform = image_transform
        self.in_channels = in_channels
        self.reports = [report_text(r.get("report") or "", report_sections) for r in self.records]
        self._rejected: dict[int, Rejection] = {}
        # Index of the first random (or unknown) transform: everything before it is cacheable.
        self._split: int | None = 0
        if image_transform is not None and hasattr(image_transform, "get_index_of_first"):
            from monai.transforms import RandomizableTrait, Transform

            self._split = image_transform.get_index_of_first(
                lambda t: isinstance(t, RandomizableTrait) or not isinstance(t, Transform)
            )
        self._cache: dict[int, dict | None] = {}
        if cache and image_transform is not None and self._split != 0:
            for i in range(len(self.records)):
                self._cache[i] = self._guarded(i, self._head, final=self._split is None)
            if self.rejected:
                log.warning("%d of %d studies have unreadable images; used without image", len(self.rejected), len(self))

    def __len__(self) -> int:
        return len(self.records)

    @property
    def rejected(self) -> list[Rejection]:
        """Studies whose image could not be read (used without image), in record order."""
        return [self._rejected[i] for i in sorted(self._rejected)]

    def _head(self, data: dict) -> dict:
        """Deterministic part of the transform (all of it when nothing is random)."""
        if self._split == 0:
            return data
        return self.transform(data, end=self._split) if self._split is not None else self.transform(data)

    def _tail(self, data: dict) -> dict:
        """Random part of the transform, after :meth:`_head`."""
        if self._split is None:
            return data
        return self.transform(data, start=self._split) if self._split else self.transform(data)

    def _guarded(self, i: int, step: Callable[[dict], dict], data: dict | None = None, *, final: bool) -> Any:
        """Run ``step`` on study ``i``'s images (or on ``data``); None when the study has no usable image.

        ``final``: the step's output is the finished image, whose channel count is checked.
        """
        paths = list(self.records[i].get("image") or [])
        if not paths or self.transform is None:
            return None
        try:
            out = step(copy.deepcopy(data) if data is not None else {"image": paths})
            if final:
                channels = int(out["image"].shape[0])
                if channels != self.in_channels:
                    raise InputRejected(paths[0], f"image has {channels} channels, the model expects {self.in_channels}")
            return out
        except (InputRejected, RuntimeError) as err:
            exc = input_rejection(err)
            uid = self.records[i].get("meta", {}).get("study_uid", i)
            if i not in self._rejected:
                log.warning("study %s: image rejected: %s", uid, exc)
            self._rejected[i] = Rejection(source=exc.source, reason=exc.reason)
            return None

    def __getitem__(self, i: int) -> dict[str, Any]:
        done = self._split is None  # nothing random: the head is the whole transform
        out = self._cache[i] if i in self._cache else self._guarded(i, self._head, final=done)
        if out is not None and not done:
            out = self._guarded(i, self._tail, out, final=True)
        image = None if out is None else as_image_tensor(out["image"])
        report = self.reports[i]
        label = np.asarray(self.records[i]["label"], dtype=np.float32)
        return {
            "image": image,  # (C, *spatial) or None
            "image_present": image is not None,
            "report": report,
            "text_present": bool(report),
            "label": torch.from_numpy(label),  # (L,), NaN = unknown
        }


def input_rejection(exc: BaseException) -> InputRejected:
    """The :class:`InputRejected` behind ``exc`` (MONAI's ``Compose`` re-raises transform errors as
    ``RuntimeError``); re-raises ``exc`` itself when there is none (a bug, not a bad input)."""
    from medfusion.data.transforms import input_error

    found = input_error(exc)
    if found is None:
        raise exc
    return found


def as_image_tensor(x: Any) -> torch.Tensor:
    """A plain float32 tensor (MONAI MetaTensor metadata dropped)."""
    if hasattr(x, "as_tensor"):
        x = x.as_tensor()
    return torch.as_tensor(x, dtype=torch.float32).contiguous()


@dataclass
class Collator:
    """Batches samples and tokenizes reports.

    Reports are padded to the longest in the batch, truncated to ``max_tokens``; the tokenizer's real
    attention mask is kept. Missing images become zeros of the batch's image shape (``image_shape``
    when no sample has an image) with ``image_present`` False.

    Args:
        tokenizer: Hugging Face tokenizer.
        max_tokens: Longest token sequence, special tokens included.
        image_shape: ``(C, *spatial)`` used when no sample of a batch has an image.
    """

    tokenizer: Any
    max_tokens: int
    image_shape: tuple[int, ...]

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(
            [s["report"] for s in samples], padding="longest", truncation=True, max_length=self.max_tokens,
            return_tensors="pt",
        )
        present = [s["image"] for s in samples if s["image"] is not None]
        shape = tuple(present[0].shape) if present else tuple(self.image_shape)
        images = torch.stack([s["image"] if s["image"] is not None else torch.zeros(shape) for s in samples])
        return {
            "image": images,  # (B, C, *spatial)
            "image_present": torch.tensor([s["image_present"] for s in samples], dtype=torch.bool),
            "input_ids": enc["input_ids"],  # (B, T)
            "attention_mask": enc["attention_mask"],  # (B, T)
            "text_present": torch.tensor([s["text_present"] for s in samples], dtype=torch.bool),
            "label": torch.stack([s["label"] for s in samples]),  # (B, L)
        }
