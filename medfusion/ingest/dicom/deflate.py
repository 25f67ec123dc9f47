"""Read Deflated Explicit VR Little Endian datasets incrementally, within a byte bound.

pydicom inflates a deflated dataset whole, in memory, before parsing even one element; a 250 KB
file of zeros inflates to 256 MB. Here the dataset is parsed from :class:`InflatedStream`, which
inflates only as far as the parser reads: a header read (``stop_before_pixels``) inflates the
header and stops, a full read inflates once, and nothing inflates beyond ``limit`` bytes.

Every end of the deflate stream ends reading; none of them can loop:

* the stream ends (``eof``): the dataset ends there; bytes after it (pydicom pads an odd-length
  stream with one zero byte) are ignored, as :func:`zlib.decompress` ignores them;
* the file ends before the stream does (truncated file): :class:`DicomReadError`
  (``... is truncated``), or ``... has no dataset`` when nothing follows the file meta;
* the input is not deflate data: :class:`zlib.error` (the reader's guard names it);
* the stream inflates past ``limit``: :class:`DicomReadError` (``... inflates to more than N bytes``);
* a step that neither consumes input nor produces output: :class:`DicomReadError`.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import pydicom.uid
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset, read_preamble
from pydicom.tag import BaseTag

from medfusion.errors import DicomReadError

#: Compressed bytes read from the file per step.
READ_CHUNK = 2**20
#: Most inflated bytes produced per step (so that the bound is checked every few MiB).
INFLATE_CHUNK = 2**22
#: Fewest inflated bytes produced per step (the parser asks for a few bytes at a time).
MIN_STEP = 2**16
#: Inflated bytes kept before the read position, for the parser's short backward seeks.
WINDOW = 2**20
_PIXEL_TAGS = {0x7FE00010, 0x7FE00009, 0x7FE00008}
#: What parsing a broken file meta group may raise (the probe then leaves the file to ``dcmread``).
_META_ERRORS = (
    InvalidDicomError,
    ValueError,
    TypeError,
    LookupError,
    EOFError,
    OSError,
    struct.error,
    RuntimeError,
)


class InflatedStream:
    """A read-only file-like view of a raw deflate stream, inflated on demand.

    Only the last :data:`WINDOW` bytes before the position are kept (the parser seeks back a few
    bytes at times), so memory stays small whatever the dataset holds; bytes skipped by a forward
    seek are inflated and dropped, and count toward ``limit`` like any other.

    Args:
        raw: The compressed file, positioned at the first byte of the deflate stream.
        path: The file (for error messages).
        limit: Most bytes the stream may inflate to.
    """

    def __init__(self, raw: BinaryIO, path: Path, limit: int) -> None:
        self._raw = raw
        self._path = path
        self._limit = limit
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._pending = b""  # compressed bytes read from the file, not yet inflated
        self._started = False  # any compressed byte read at all
        self._buf = bytearray()  # inflated bytes [self._base, self._end)
        self._base = 0
        self._pos = 0
        self.name = str(path)

    @property
    def _end(self) -> int:
        return self._base + len(self._buf)

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes from the current position (all the rest when negative or None)."""
        if self._pos < self._base:
            raise DicomReadError(
                self._path,
                "deflated dataset: the parser went back beyond the bytes kept",
            )
        self._fill(None if size is None or size < 0 else self._pos + size)
        end = self._end if size is None or size < 0 else min(self._pos + size, self._end)
        data = bytes(self._buf[self._pos - self._base : end - self._base])
        self._pos = max(self._pos, end)
        drop = min(self._pos - WINDOW - self._base, len(self._buf))
        if drop > WINDOW:
            del self._buf[:drop]
            self._base += drop
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move to ``offset`` (from the start or the current position)."""
        if whence == os.SEEK_CUR:
            offset += self._pos
        elif whence != os.SEEK_SET:
            raise ValueError(f"unsupported whence {whence}")
        if offset < 0:
            raise ValueError("negative seek position")
        self._pos = offset
        return offset

    def tell(self) -> int:
        """The current position in the inflated dataset."""
        return self._pos

    def _fill(self, target: int | None) -> None:
        """Inflate until ``target`` bytes are known (None: to the end of the stream).

        Raises when the bytes asked for lie beyond ``limit``. Each turn of the loop reads
        compressed input, or consumes some, or produces some, or raises: it cannot spin.
        """
        want = self._limit + 1 if target is None else min(target, self._limit + 1)
        while self._end < want and not self._inflater.eof:
            if not self._pending:
                self._pending = self._raw.read(READ_CHUNK)
                if not self._pending:
                    if not self._started:
                        raise DicomReadError(
                            self._path,
                            "deflated file has no dataset after its file meta information",
                        )
                    raise DicomReadError(
                        self._path,
                        f"deflated dataset is truncated: the file ends after {self._end} inflated bytes",
                    )
                self._started = True
            step = min(
                INFLATE_CHUNK,
                max(want - self._end, MIN_STEP),
                self._limit + 1 - self._end,
            )
            out = self._inflater.decompress(self._pending, step)
            tail = b"" if self._inflater.eof else self._inflater.unconsumed_tail
            if not out and len(tail) == len(self._pending) and not self._inflater.eof:
                raise DicomReadError(
                    self._path,
                    "deflated dataset is corrupt: inflating makes no progress",
                )
            self._pending = tail
            keep_from = self._pos - WINDOW - self._base  # bytes before this are never read again
            if keep_from > len(self._buf):  # a forward seek skipped them all: drop instead of storing
                skipped = min(keep_from - len(self._buf), len(out))
                self._base += len(self._buf) + skipped
                self._buf = bytearray(out[skipped:])
            else:
                self._buf += out
        if self._end > self._limit and (target is None or target > self._limit):
            raise DicomReadError(
                self._path,
                f"deflated dataset inflates to more than {self._limit} bytes",
            )


def deflated_start(path: Path) -> tuple[FileMetaDataset, int] | None:
    """The file meta and the offset of the dataset of a Deflated Explicit VR Little Endian file.

    The dataset starts after the last group 0002 element, wherever the (possibly wrong) group
    length says, as pydicom reads it.

    Returns:
        None when the file is not a Part-10 file (no ``DICM`` preamble), its file meta cannot be
        parsed (``dcmread`` then says why), or it is not deflated.
    """
    with path.open("rb") as f:
        try:
            read_preamble(f, False)
            raw = read_dataset(f, False, True, stop_when=_not_group_2)
            # The end of the last element (f.tell() is past the end when fewer than 8 bytes follow).
            ends: list[int] = []
            for tag in list(raw.keys()):  # iterating a Dataset itself would convert the elements
                element = raw.get_item(tag)
                if isinstance(element, RawDataElement) and element.length != 0xFFFFFFFF:
                    ends.append(element.value_tell + element.length)
            meta = FileMetaDataset(raw)
            deflated = meta.get("TransferSyntaxUID") == pydicom.uid.DeflatedExplicitVRLittleEndian
        except _META_ERRORS:
            return None
        return (meta, max(ends, default=f.tell())) if deflated else None


def read_deflated(
    path: Path,
    file_meta: FileMetaDataset,
    start: int,
    *,
    pixels: bool,
    tags: list[str] | None,
    limit: int,
) -> Dataset:
    """Parse the deflated dataset of ``path`` (see the module docstring).

    Args:
        path: The file.
        file_meta: Its file meta information (:func:`deflated_start`).
        start: Offset of the deflate stream in the file (:func:`deflated_start`).
        pixels: Read the pixel data too (else stop before it; only the header is inflated).
        tags: Parse only these elements (keywords), or None for all.
        limit: Most bytes the dataset may inflate to.

    Returns:
        The dataset, ``file_meta`` attached.

    Raises:
        DicomReadError: Truncated, empty or beyond ``limit``; zlib.error: not deflate data.
    """
    specific = [BaseTag(t) for t in (tag_for_keyword(k) for k in tags or []) if t is not None] or None
    with path.open("rb") as f:
        f.seek(start)
        stream = InflatedStream(f, path, limit)
        ds = read_dataset(
            stream,  # type: ignore[arg-type]  # file-like: read/seek/tell
            False,
            True,
            stop_when=None if pixels else _at_pixel_data,
            specific_tags=specific,  # type: ignore[arg-type]
        )
    ds.file_meta = file_meta
    return ds


def _not_group_2(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag >> 16 != 2


def _at_pixel_data(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag in _PIXEL_TAGS
