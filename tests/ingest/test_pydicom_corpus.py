"""Every file of pydicom's shipped test corpus goes through :func:`read_dicom`.

Each file must either give a finite float32 4-D image in ``[0, 1]`` or raise
:class:`~medfusion.errors.DicomReadError`; any other exception, or more than ``TIME_LIMIT_S`` on one
file, fails. Run this module as a script for the summary (read / rejected / crashed and the
rejection reasons grouped)::

    python tests/ingest/test_pydicom_corpus.py
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pydicom.data
import pytest
import torch

from medfusion.errors import DicomReadError
from medfusion.ingest.dicom.read import read_dicom

#: Per-file bound on reading time, seconds.
TIME_LIMIT_S = 20.0


def corpus_files() -> list[Path]:
    """pydicom's test, charset and palette files that ship with the installed wheel (files only)."""
    found: set[str] = set(pydicom.data.get_testdata_files())
    for getter in ("get_charset_files", "get_palette_files"):
        if hasattr(pydicom.data, getter):
            found.update(getattr(pydicom.data, getter)())
    return sorted(Path(p) for p in found if Path(p).is_file())


def _file_id(path: Path) -> str:
    root = Path(pydicom.data.__file__).parent
    try:
        return str(path.relative_to(root))
    except ValueError:
        return path.name


def _check_image(path: Path) -> None:
    image = read_dicom(path)
    pixels = image.pixels
    assert pixels.dtype == torch.float32, path
    assert pixels.ndim == 4 and pixels.shape[1] in (1, 3), (path, tuple(pixels.shape))
    assert bool(torch.isfinite(pixels).all()), path
    assert 0.0 <= float(pixels.min()) and float(pixels.max()) <= 1.0, path


@dataclass
class CorpusReport:
    """Outcome of reading the whole corpus.

    Attributes:
        read: Files read into a valid image.
        rejected: Reason to the files rejected with it.
        crashed: File to ``ExceptionType: message`` for anything other than DicomReadError.
        slowest: (seconds, file) of the slowest file.
    """

    read: list[str] = field(default_factory=list)
    rejected: dict[str, list[str]] = field(default_factory=dict)
    crashed: dict[str, str] = field(default_factory=dict)
    slowest: tuple[float, str] = (0.0, "")

    @property
    def counts(self) -> dict[str, int]:
        n_rejected = sum(len(v) for v in self.rejected.values())
        return {"files": len(self.read) + n_rejected + len(self.crashed), "read": len(self.read),
                "rejected": n_rejected, "crashed": len(self.crashed)}  # fmt: skip

    def format(self) -> str:
        """A plain-text summary: counts, then rejection reasons by frequency with example files."""
        c = self.counts
        lines = [
            f"pydicom {pydicom.__version__} corpus: {c['files']} files: {c['read']} read, "
            f"{c['rejected']} rejected (DicomReadError), {c['crashed']} crashed; "
            f"slowest {self.slowest[0]:.2f}s ({self.slowest[1]})",
            "Rejection reasons:",
        ]
        grouped = Counter({reason: len(files) for reason, files in self.rejected.items()})
        for reason, n in grouped.most_common():
            examples = ", ".join(self.rejected[reason][:3]) + (", ..." if n > 3 else "")
            lines.append(f"  {n:3d}  {reason}  [{examples}]")
        for name, error in self.crashed.items():
            lines.append(f"  CRASH {name}: {error}")
        return "\n".join(lines)


def corpus_report() -> CorpusReport:
    """Read every corpus file and classify the outcome (never raises for a file)."""
    report = CorpusReport()
    for path in corpus_files():
        name = _file_id(path)
        start = time.perf_counter()
        try:
            _check_image(path)
            report.read.append(name)
        except DicomReadError as exc:
            report.rejected.setdefault(exc.reason, []).append(name)
        except Exception as exc:  # noqa: BLE001 - counting crashes is the point
            report.crashed[name] = f"{type(exc).__name__}: {exc}"
        elapsed = time.perf_counter() - start
        if elapsed > report.slowest[0]:
            report.slowest = (elapsed, name)
    return report


FILES = corpus_files()


def test_corpus_is_present() -> None:
    assert len(FILES) > 50
    assert any(p.name == "CT_small.dcm" for p in FILES)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", FILES, ids=_file_id)
def test_file_reads_or_is_rejected_cleanly(path: Path) -> None:
    start = time.perf_counter()
    try:
        _check_image(path)
    except DicomReadError as exc:
        assert exc.source == str(path)
        assert exc.reason and "\n" not in exc.reason
    elapsed = time.perf_counter() - start
    assert elapsed < TIME_LIMIT_S, f"{path.name} took {elapsed:.1f}s"


def test_corpus_report_summary() -> None:
    report = corpus_report()
    counts = report.counts
    assert counts["crashed"] == 0, report.format()
    assert counts["read"] >= 90, report.format()  # 101 with pydicom 3.0.2 and the installed plugins
    assert {"test_files/CT_small.dcm", "test_files/MR_small_jp2klossless.dcm"} <= set(report.read)


if __name__ == "__main__":
    print(corpus_report().format())  # noqa: T201 - command-line summary
