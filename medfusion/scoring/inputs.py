"""The paths a scoring job is given, checked before anything heavy is loaded.

A job checks its inputs in this order, each failing with one error that names the path and the
reason: the source (a readable folder, or an ``http(s)://`` DICOMweb URL), the reports (a readable
file or folder), the output folder (created when missing, and locked: :class:`OutputLock`).
:func:`~medfusion.scoring.job.run_score` runs these checks as it opens each input; the command line
runs them (:func:`check_job_inputs`) before it imports torch, MONAI and MLflow, about 12 s of CPU on a
2-core machine, so that a mistyped path is answered at once. This module imports none of them.
"""

from __future__ import annotations

import os
from pathlib import Path

from medfusion.errors import DicomReadError, InputRejected, ReportParseError
from medfusion.scoring.lock import OutputLock

#: URL schemes of a DICOMweb source.
DICOMWEB_SCHEMES = ("http://", "https://")


def check_readable(path: Path, error: type[InputRejected] = InputRejected) -> None:
    """Fail fast, naming the path and the reason, when a file or folder the user gave cannot be read.

    A folder must be listable, a file openable for reading (one byte is read).

    Args:
        path: The file or folder.
        error: The typed error to raise.

    Raises:
        InputRejected: ``error(path, reason)``: missing, not readable, a path component not a folder...
    """
    try:
        if path.is_dir():
            with os.scandir(path) as entries:
                next(entries, None)
        else:
            with open(path, "rb") as handle:
                handle.read(1)
    except FileNotFoundError:
        raise error(path, "no such file or folder") from None
    except OSError as exc:
        raise error(path, f"cannot read: {exc.strerror or type(exc).__name__}") from None


def source_folder(spec: str) -> Path | None:
    """The folder a command-line source names, checked; None for a DICOMweb URL (checked when read).

    Raises:
        DicomReadError: ``spec`` is neither a URL nor a readable folder.
    """
    if spec.startswith(DICOMWEB_SCHEMES):
        return None
    path = Path(spec)
    check_readable(path, DicomReadError)
    if not path.is_dir():
        raise DicomReadError(path, "not a folder (and not an http(s):// DICOMweb URL)")
    return path


def check_job_inputs(source: str, reports: Path | None, out_dir: Path) -> None:
    """Check a job's source, reports and output folder, in that order (see the module docstring).

    The output folder is created when missing and locked once (then released), as the job will.

    Raises:
        DicomReadError: The source.
        ReportParseError: The reports.
        MedfusionError: The output folder cannot be created, written or locked.
    """
    source_folder(source)
    if reports is not None:
        check_readable(Path(reports), ReportParseError)
    with OutputLock(out_dir):
        pass
