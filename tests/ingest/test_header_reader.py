"""Header reads in a child process with a wall-time bound, many at a time
(:meth:`~medfusion.ingest.dicom.header_reader.BoundedHeaderReader.read_many`): answers in order, a file over
the bound rejected, the child replaced and the paths it had not answered read by the next one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from medfusion.errors import DicomReadError
from medfusion.ingest.dicom.header_reader import WINDOW, BoundedHeaderReader
from medfusion.ingest.dicom.read import read_dicom_header
from tests.ingest.test_reduced_decode import _write
from tests.robustness import fuzz


def _files(root: Path, n: int) -> list[Path]:
    pixels = np.zeros((8, 8), dtype=np.uint16)
    return [_write(root / f"{i}.dcm", pixels, 12, ExplicitVRLittleEndian) for i in range(n)]


@pytest.mark.slow  # starts a child process (seconds, up to half a minute on a busy machine)
def test_answers_in_order_past_the_window(tmp_path: Path) -> None:
    good = _files(tmp_path, WINDOW + 3)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all" * 10)
    paths = [*good[:5], junk, *good[5:]]
    with BoundedHeaderReader(60.0) as reader:
        out = list(reader.read_many(paths))
    assert [p for p, _ in out] == paths
    for path, meta in out:
        if path == junk:
            assert isinstance(meta, DicomReadError) and meta.reason.startswith("not a DICOM file")
        else:
            assert not isinstance(meta, DicomReadError) and meta["sop_uid"] == read_dicom_header(path)["sop_uid"]


@pytest.mark.slow
def test_a_file_over_the_bound_is_rejected_and_the_rest_read(tmp_path: Path) -> None:
    bound_s = 2.0
    slow = fuzz.slow_dicom_beyond(tmp_path / "slow.dcm", bound_s, read_dicom_header)
    good = _files(tmp_path, 6)
    paths = [good[0], slow, *good[1:]]
    with BoundedHeaderReader(bound_s) as reader:
        out = list(reader.read_many(paths))
    assert [p for p, _ in out] == paths
    assert isinstance(out[1][1], DicomReadError) and "exceeded 2 s" in out[1][1].reason
    assert all(not isinstance(meta, DicomReadError) for p, meta in out if p != slow)
