"""Decoded images on disk: training decodes each study's DICOM once, not once per run or per epoch.

:class:`DecodedCache` keeps the output of :meth:`~medfusion.processing.preprocessor.Preprocessor.decode`
(decode, windowing, frame selection, resize: everything before the first random augmentation) under
``cache_dir``, keyed by

* the SHA-256 of every image file's bytes, in the study's order (a changed file is a miss; a moved or
  renamed archive still hits), and
* the chain's fingerprint: the preprocessing spec, the flavour (train heads stop before the random
  augmentations, evaluation heads run the whole chain), whether JPEG 2000 is decoded at a reduced
  level (``MEDFUSION_REDUCED_DECODE``), the cache format and the medfusion, MONAI and torch versions
  (a change to any of them is a miss).

Guarantees: entries are written to a temporary file and renamed into place, so concurrent writers
(two runs, DDP ranks, DataLoader workers) never expose a partial entry and the last rename wins with the
same content; an entry that cannot be loaded (truncated, corrupt) is deleted and rebuilt; a study whose
image is rejected is remembered with its reason, so a broken file is not decoded again either. Entries
are loaded with ``torch.load(weights_only=True)``: a planted file can hold tensors, not code. Files too
large to read (the reader's byte bound) are not hashed: they are decoded, and rejected, as without a
cache.

Imports: torch, MONAI, :mod:`medfusion.processing`, :mod:`medfusion.errors`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import monai
import torch

from medfusion import __version__
from medfusion.errors import InputRejected
from medfusion.ingest.dicom.limits import byte_limit
from medfusion.ingest.dicom.reduced import enabled as reduced_decode_enabled
from medfusion.processing.preprocessor import Decoded, Preprocessor

log = logging.getLogger(__name__)

#: Bump when what :meth:`Preprocessor.decode` returns changes without a version or spec change.
CACHE_FORMAT = 2  # 2: 2D JPEG 2000 decoded at a reduced resolution level (medfusion.ingest.dicom.reduced)
_CHUNK = 1 << 20


@dataclass
class CacheStats:
    """What a dataset's construction found in the cache.

    Attributes:
        hits: Studies whose entry (image or rejection) was already there.
        misses: Studies decoded and written now.
        uncached: Studies read without the cache (a file too large or unreadable to hash).
    """

    hits: int = 0
    misses: int = 0
    uncached: int = 0

    @property
    def hit_rate(self) -> float:
        """hits / (hits + misses + uncached); NaN for no study."""
        total = self.hits + self.misses + self.uncached
        return self.hits / total if total else float("nan")

    def as_metrics(self, prefix: str = "data_cache") -> dict[str, float]:
        """The counts and rate as MLflow metrics (``data_cache_hits``...)."""
        return {
            f"{prefix}_hits": float(self.hits),
            f"{prefix}_misses": float(self.misses),
            f"{prefix}_uncached": float(self.uncached),
            f"{prefix}_hit_rate": self.hit_rate,
        }


def _file_digest(path: Path, max_bytes: int) -> str | None:
    """SHA-256 of a file's bytes; None when it is larger than ``max_bytes`` or cannot be read."""
    try:
        if path.stat().st_size > max_bytes:
            return None
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()
    except OSError:
        return None


class DecodedCache:
    """A folder of decoded study images for one preprocessor (see the module docstring).

    Args:
        root: The cache folder (shared by every run and model; entries of other chains never match).
        preprocessor: The preprocessor whose :meth:`~Preprocessor.decode` is cached.
    """

    def __init__(self, root: str | Path, preprocessor: Preprocessor) -> None:
        if not preprocessor.cacheable:
            raise ValueError("this preprocessor's decode does no work worth caching")
        self.root = Path(root)
        self.preprocessor = preprocessor
        self.stats = CacheStats()
        self._max_bytes = byte_limit(preprocessor.spec.max_pixels)
        fingerprint = {
            "format": CACHE_FORMAT,
            "spec": preprocessor.spec.to_dict(),
            "train": preprocessor.train,
            "reduced_decode": reduced_decode_enabled(),
            "medfusion": __version__,
            "monai": monai.__version__,
            "torch": torch.__version__,
        }
        self._fingerprint = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()

    def key(self, paths: Sequence[str]) -> str | None:
        """The entry key of a study's files, or None when one cannot be hashed (then it is not cached)."""
        digest = hashlib.sha256(self._fingerprint.encode())
        for path in paths:
            file_digest = _file_digest(Path(path), self._max_bytes)
            if file_digest is None:
                return None
            digest.update(file_digest.encode())
        return digest.hexdigest()

    def _entry(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.pt"

    def ensure(self, paths: Sequence[str]) -> tuple[str | None, str | None]:
        """Make sure a study's entry exists and loads (decoding it on a miss).

        Returns:
            ``(key, rejected)``: the entry key (None when the study is not cacheable: read it with
            :meth:`decode` each time) and, when its image is rejected, the reason (else None).
        """
        key = self.key(paths)
        if key is None:
            self.stats.uncached += 1
            return None, None
        entry = self._load(key)
        if entry is not None:
            self.stats.hits += 1
            rejected = entry.get("rejected")
            return key, None if rejected is None else str(rejected)
        self.stats.misses += 1
        try:
            self._build(key, paths)
        except InputRejected as exc:
            return key, exc.reason
        return key, None

    def decode(self, paths: Sequence[str], key: str | None = None) -> Decoded:
        """The study's decoded head: from the cache when its entry loads, else decoded (and written).

        Args:
            paths: The study's image files.
            key: Its key from :meth:`ensure` (saves hashing the files again), or None to compute it.

        Raises:
            InputRejected: The image cannot be read (now, or when the entry was made).
        """
        key = key or self.key(paths)
        if key is None:
            return self.preprocessor.decode(paths)
        entry = self._load(key)
        if entry is None:
            return self._build(key, paths)
        return self._from_entry(entry, paths)

    def _from_entry(self, entry: dict[str, object], paths: Sequence[str]) -> Decoded:
        source = str(paths[0])
        if "rejected" in entry:
            raise InputRejected(source, str(entry["rejected"]))
        image = entry["image"]
        assert isinstance(image, torch.Tensor)
        return Decoded({"image": image}, source, bool(entry["final"]))

    def _build(self, key: str, paths: Sequence[str]) -> Decoded:
        try:
            decoded = self.preprocessor.decode(paths)
        except InputRejected as exc:
            self._write(key, {"rejected": exc.reason})
            raise
        image = decoded.data["image"]
        plain = image.as_tensor() if isinstance(image, monai.data.MetaTensor) else torch.as_tensor(image)
        self._write(key, {"image": plain.detach().cpu().contiguous(), "final": decoded.final})
        return Decoded({"image": plain}, decoded.source, decoded.final)

    def _load(self, key: str) -> dict[str, object] | None:
        path = self._entry(key)
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - any unreadable entry is rebuilt, never trusted
            log.warning("decoded-image cache entry %s is unreadable (%s); rebuilding it", path.name, type(exc).__name__)
            path.unlink(missing_ok=True)
            return None
        if not isinstance(entry, dict) or not ({"image", "final"} <= entry.keys() or "rejected" in entry):
            log.warning("decoded-image cache entry %s is not an entry; rebuilding it", path.name)
            path.unlink(missing_ok=True)
            return None
        return entry

    def _write(self, key: str, entry: dict[str, object]) -> None:
        path = self._entry(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                torch.save(entry, handle)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
