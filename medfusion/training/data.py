"""Study records -> samples for training: a torch Dataset that caches the deterministic preprocessing.

Records are the MONAI-style dicts of :func:`medfusion.ingest.manifest.rows_to_records`:
``{"image": [paths], "report": str, "label": (L,) float32 with NaN = unknown, "meta": {...}}``.

Each record becomes a :class:`~medfusion.processing.sample.Sample` through the model's
:class:`~medfusion.processing.preprocessor.Preprocessor`, exactly as at inference. Everything before
the image chain's first random transform (decoding, frame selection, resizing) runs once per study and
is kept in memory; only the random augmentations run every epoch. A study whose image cannot be read
(:class:`~medfusion.errors.InputRejected`) is logged, listed in :attr:`StudyDataset.rejected`, and used
as a study without image.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medfusion.errors import InputRejected
from medfusion.ingest.records import Rejection
from medfusion.processing.preprocessor import Decoded, Preprocessor
from medfusion.processing.sample import Sample, StudyInput

log = logging.getLogger(__name__)


class StudyDataset(Dataset):
    """Records -> :class:`~medfusion.processing.sample.Sample` (with the record's label).

    Args:
        records: Study records (see the module docstring).
        preprocessor: The model's preprocessor (train flavour for the train split).
        cache: Run the deterministic head of the image chain once per study, at construction.
    """

    def __init__(self, records: Sequence[dict[str, Any]], preprocessor: Preprocessor, *, cache: bool = True) -> None:
        self.preprocessor = preprocessor
        self.studies = [
            StudyInput(
                image_paths=[str(p) for p in r.get("image") or []],
                report_text=r.get("report") or "",
                study_uid=(r.get("meta") or {}).get("study_uid"),
            )
            for r in records
        ]
        self.labels = [torch.from_numpy(np.asarray(r["label"], dtype=np.float32)) for r in records]  # (L,) each
        self._rejected: dict[int, Rejection] = {}
        self._decoded: dict[int, Decoded | None] = {}
        if cache and preprocessor.cacheable:
            for i in range(len(self.studies)):
                self._decoded[i] = self._decode(i)
            if self.rejected:
                log.warning(
                    "%d of %d studies have unreadable images; used without image", len(self.rejected), len(self)
                )

    def __len__(self) -> int:
        return len(self.studies)

    @property
    def rejected(self) -> list[Rejection]:
        """Studies whose image could not be read (used without image), in record order."""
        return [self._rejected[i] for i in sorted(self._rejected)]

    def _reject(self, i: int, exc: InputRejected) -> None:
        if i not in self._rejected:
            log.warning("study %s: image rejected: %s", self.studies[i].study_uid or i, exc)
        self._rejected[i] = Rejection(source=exc.source, reason=exc.reason)

    def _decode(self, i: int) -> Decoded | None:
        """Study ``i``'s decoded image head, or None when it has no usable image."""
        study = self.studies[i]
        if not study.image_paths or not self.preprocessor.uses_image:
            return None
        try:
            return self.preprocessor.decode(study.image_paths)
        except InputRejected as exc:
            self._reject(i, exc)
            return None

    def __getitem__(self, i: int) -> Sample:
        study, label = self.studies[i], self.labels[i]
        decoded = self._decoded[i] if i in self._decoded else self._decode(i)
        if decoded is not None:
            try:
                return self.preprocessor(study, label=label, decoded=decoded)
            except InputRejected as exc:
                self._reject(i, exc)
        return self.preprocessor(dataclasses.replace(study, image_paths=[]), label=label)
