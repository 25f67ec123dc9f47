"""Study records -> samples for training: a torch Dataset that caches the deterministic preprocessing.

Records are the MONAI-style dicts of :func:`medfusion.ingest.manifest.rows_to_records`:
``{"image": [paths], "report": str, "label": (L,) float32 with NaN = unknown, "meta": {...}}``.

Each record becomes a :class:`~medfusion.processing.sample.Sample` through the model's
:class:`~medfusion.processing.preprocessor.Preprocessor`, exactly as at inference. Everything before
the image chain's first random transform (decoding, frame selection, resizing) runs once per study and
is kept in memory, or, with ``cache_dir``, on disk across runs
(:class:`~medfusion.training.decoded_cache.DecodedCache`: keyed by file content and preprocessing, loaded
per access, so memory does not grow with the cohort); only the random augmentations run every epoch.
Training samples may be asked for by ``(epoch, index)`` (the sampler of
:mod:`medfusion.training.distributed`): the random transforms are then seeded from that key, so a study's
augmentation in an epoch is the same whichever process or worker reads it.
A study whose image cannot be read (:class:`~medfusion.errors.InputRejected`) is logged, listed in
:attr:`StudyDataset.rejected`, and used as a study without image.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import track
from torch.utils.data import Dataset

from medfusion.errors import InputRejected
from medfusion.ingest.records import Rejection
from medfusion.processing.preprocessor import Decoded, Preprocessor
from medfusion.processing.sample import Sample, StudyInput
from medfusion.training.decoded_cache import DecodedCache
from medfusion.training.distributed import sample_seed

log = logging.getLogger(__name__)


class StudyDataset(Dataset):
    """Records -> :class:`~medfusion.processing.sample.Sample` (with the record's label).

    Args:
        records: Study records (see the module docstring).
        preprocessor: The model's preprocessor (train flavour for the train split).
        cache: Run the deterministic head of the image chain once per study, at construction.
        cache_dir: Keep those heads in this on-disk :class:`~medfusion.training.decoded_cache.DecodedCache`
            (loaded per access) instead of in memory; None: in memory.
        augment_seed: Base seed of the per-sample random-transform seeds of ``(epoch, index)`` keys.
    """

    def __init__(
        self,
        records: Sequence[dict[str, Any]],
        preprocessor: Preprocessor,
        *,
        cache: bool = True,
        cache_dir: str | Path | None = None,
        augment_seed: int = 0,
    ) -> None:
        self.preprocessor = preprocessor
        self.augment_seed = augment_seed
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
        #: The on-disk cache (``cache_dir``) and each study's entry key in it.
        self.disk_cache: DecodedCache | None = None
        self._keys: dict[int, str | None] = {}
        if cache and preprocessor.cacheable and cache_dir is not None:
            self.disk_cache = DecodedCache(cache_dir, preprocessor)
            for i in track(range(len(self.studies)), description="decoded-image cache", transient=True):
                self._ensure_on_disk(i)
            stats = self.disk_cache.stats
            log.info(
                "decoded-image cache %s: %d hit(s), %d miss(es), %d not cacheable",
                cache_dir,
                stats.hits,
                stats.misses,
                stats.uncached,
            )
        elif cache and preprocessor.cacheable:
            for i in range(len(self.studies)):
                self._decoded[i] = self._decode(i)
        if cache and preprocessor.cacheable and self.rejected:
            log.warning("%d of %d studies have unreadable images; used without image", len(self.rejected), len(self))

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

    def _ensure_on_disk(self, i: int) -> None:
        """Put study ``i``'s decoded head (or its rejection) in the disk cache; note a rejection."""
        study = self.studies[i]
        if not study.image_paths or not self.preprocessor.uses_image or self.disk_cache is None:
            return
        self._keys[i], rejected = self.disk_cache.ensure(study.image_paths)
        if rejected is not None:
            self._reject(i, InputRejected(study.image_paths[0], rejected))

    def _decode(self, i: int) -> Decoded | None:
        """Study ``i``'s decoded image head, or None when it has no usable image."""
        study = self.studies[i]
        if not study.image_paths or not self.preprocessor.uses_image:
            return None
        try:
            if self.disk_cache is not None:
                return self.disk_cache.decode(study.image_paths, self._keys.get(i))
            return self.preprocessor.decode(study.image_paths)
        except InputRejected as exc:
            self._reject(i, exc)
            return None

    def __getitem__(self, key: int | tuple[int, int]) -> Sample:
        if isinstance(key, tuple):  # (epoch, index): augmentation seeded by the key
            epoch, i = key
            self.preprocessor.set_random_state(sample_seed(self.augment_seed, epoch, i))
        else:
            i = key
        study, label = self.studies[i], self.labels[i]
        decoded = self._decoded[i] if i in self._decoded else self._decode(i)
        if decoded is not None:
            try:
                return self.preprocessor(study, label=label, decoded=decoded)
            except InputRejected as exc:
                self._reject(i, exc)
        return self.preprocessor(dataclasses.replace(study, image_paths=[]), label=label)
