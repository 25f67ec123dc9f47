"""Deflated Explicit VR Little Endian files: every way a deflate stream ends is read in bounded time.

The files are real Part-10 files (header encoded by pydicom's writer, one also by pydicom's own deflate
writer) whose deflate streams end exactly, with pydicom's pad byte, with trailing bytes, truncated,
empty, never, or are not deflate data at all (:func:`tests.robustness.fuzz.deflate_variants`).
"""

from __future__ import annotations

import io
import os
import random
import resource
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from medfusion.errors import DicomReadError
from medfusion.ingest.dicom.read import read_dicom, read_dicom_header
from tests.robustness import fuzz

OK = "ok"
#: case -> (header read outcome, full read outcome): OK or a substring of the rejection reason.
EXPECTED = {
    "deflate/complete_exact/small": (OK, OK),
    "deflate/complete_padded/small": (OK, OK),
    "deflate/complete_trailing/small": (OK, OK),
    "deflate/complete_exact/huge_zero": (OK, "image too large: 16000x16000x1 pixels"),
    "deflate/complete_padded/huge_zero": (OK, "image too large: 16000x16000x1 pixels"),
    "deflate/complete_trailing/huge_zero": (
        OK,
        "image too large: 16000x16000x1 pixels",
    ),
    "deflate/pydicom/small": (OK, OK),
    "deflate/truncated_in_pixels/small": (OK, "deflated dataset is truncated"),
    "deflate/truncated_in_header/small": (
        "deflated dataset is truncated",
        "deflated dataset is truncated",
    ),
    "deflate/truncated_last_byte/small": (OK, "deflated dataset is truncated"),
    "deflate/empty_no_dataset/small": (
        "no dataset after its file meta",
        "no dataset after its file meta",
    ),
    "deflate/empty_empty_stream/small": (
        "missing required tag Rows",
        "missing required tag Rows",
    ),
    "deflate/empty_empty_blocks/small": (
        "deflated dataset is truncated",
        "deflated dataset is truncated",
    ),
    "deflate/not_zlib_random/small": (
        "deflated data is corrupt",
        "deflated data is corrupt",
    ),
    "deflate/not_zlib_native/small": (
        "deflated data is corrupt",
        "deflated data is corrupt",
    ),
    "deflate/not_zlib_gzip/small": (
        "deflated data is corrupt",
        "deflated data is corrupt",
    ),
    "deflate/bomb_private_600mb/small": (
        "inflates to more than 579108864 bytes",
        "inflates to more than 579108864",
    ),
}
#: Wall-time bound of one read (the bomb inflates 576 MB, ~1 s on an idle core).
BOUND_S = 20.0


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return dict(fuzz.deflate_variants(tmp_path_factory.mktemp("deflate")))


def _outcome(read: object, path: Path) -> str:
    try:
        read(path)  # type: ignore[operator]
    except DicomReadError as exc:
        assert exc.source == str(path) and "\n" not in exc.reason
        return exc.reason
    return OK


def test_the_variants_cover_every_expected_case(variants: dict[str, Path]) -> None:
    assert set(variants) == set(EXPECTED)


@pytest.mark.timeout(120)  # on the old reader the padded and trailing cases never return
@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_every_end_of_stream_shape_ends_in_bounded_time(variants: dict[str, Path], case: str) -> None:
    path = variants[case]
    for read, expected in zip((read_dicom_header, read_dicom), EXPECTED[case], strict=True):
        start = time.perf_counter()
        outcome = _outcome(read, path)
        seconds = time.perf_counter() - start
        assert seconds < BOUND_S, (case, read.__name__, seconds)
        if expected == OK:
            assert outcome == OK, (case, read.__name__, outcome)
        else:
            assert expected in outcome, (case, read.__name__, outcome)


@pytest.mark.timeout(120)
def test_complete_streams_decode_to_the_written_pixels(
    variants: dict[str, Path],
) -> None:
    rng = np.random.default_rng(13)  # deflate_variants' first draw: the small image's pixels
    stored = rng.integers(0, 4096, (64, 64), dtype=np.uint16).astype(np.float64)
    expected = (stored - stored.min()) / (stored.max() - stored.min())
    for shape in ("exact", "padded", "trailing"):
        pixels = read_dicom(variants[f"deflate/complete_{shape}/small"]).pixels
        np.testing.assert_allclose(pixels[0, 0].numpy(), expected, atol=1e-6)


@pytest.mark.timeout(120)
def test_header_of_the_huge_zero_image_inflates_only_the_header(
    variants: dict[str, Path],
) -> None:
    """The 250 KB file of a 16000² zero image: its header read neither inflates 256 MB nor holds it."""
    path = variants["deflate/complete_padded/huge_zero"]
    assert path.stat().st_size < 300_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    meta = read_dicom_header(path, max_bytes=2**20)  # a header read needs far less than 1 MiB inflated
    assert time.perf_counter() - start < 2.0
    assert (meta["rows"], meta["columns"]) == (16000, 16000)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024  # KiB


def test_a_bomb_is_refused_at_the_bound_given(tmp_path: Path) -> None:
    ds = fuzz.image_dataset(16, 16)
    path = fuzz.write_deflated(tmp_path / "b.dcm", ds, fuzz.deflated_image_stream(ds, 40 * 2**20))
    assert read_dicom_header(path, max_bytes=2**20)["rows"] == 16
    with pytest.raises(DicomReadError, match="image too large: 16x16x1 pixels > max_pixels 255"):
        read_dicom(path, max_pixels=255)
    with pytest.raises(DicomReadError, match="deflated dataset inflates to more than 10485760 bytes"):
        read_dicom(path, max_bytes=10 * 2**20)  # declares 256 pixels, holds 40 MiB


def test_inflated_stream_reads_and_seeks_like_the_bytes_it_inflates() -> None:
    """Random reads and seeks (back up to the window, forward past it) return the same bytes as BytesIO."""
    from medfusion.ingest.dicom import deflate

    rng = random.Random(0)
    data = rng.randbytes(20_000) + bytes(50_000) + rng.randbytes(20_000)
    comp = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    raw = comp.compress(data) + comp.flush() + b"\x00"
    for trial in range(100):
        stream = deflate.InflatedStream(io.BytesIO(raw), Path("x.dcm"), 10**9)
        stream_window = deflate.WINDOW
        ref, furthest = io.BytesIO(data), 0
        for _ in range(40):
            op = rng.random()
            if op < 0.5:
                n = rng.choice([0, 1, 8, 100, 3000, 40_000, -1])
                assert stream.read(n) == ref.read(n), trial
                furthest = max(furthest, ref.tell())
            elif op < 0.8:
                pos = max(0, furthest - rng.randint(0, min(stream_window, 9_000)))
                stream.seek(pos)
                ref.seek(pos)
            else:
                step = min(rng.randint(0, 30_000), len(data) - ref.tell())
                stream.seek(step, os.SEEK_CUR)
                ref.seek(step, os.SEEK_CUR)
            assert stream.tell() == ref.tell()


@pytest.mark.parametrize("limit", [0, 10, 89_999, 90_000])
def test_inflated_stream_limit_is_exact(limit: int) -> None:
    from medfusion.ingest.dicom import deflate

    data = bytes(90_000)
    comp = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    stream = deflate.InflatedStream(io.BytesIO(comp.compress(data) + comp.flush()), Path("x.dcm"), limit)
    if limit >= len(data):
        assert stream.read() == data
    else:
        assert stream.read(limit) == data[:limit]  # what lies within the bound is served
        with pytest.raises(DicomReadError, match=f"inflates to more than {limit} bytes"):
            stream.read(1)
