"""Every failure of a DICOM read becomes one :class:`~medfusion.errors.DicomReadError`; pydicom's chatter is redacted.

* :func:`guard`: runs one step of a read and turns any known failure into a ``DicomReadError`` naming
  the file and a short reason (:func:`reason`, quoted values redacted: they may be patient data).
* :func:`pydicom_warnings`: pydicom's warnings and log records inside a read, logged once each at
  DEBUG by this module's logger, redacted.
"""

from __future__ import annotations

import logging
import re
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydicom.errors import BytesLengthException, InvalidDicomError

from medfusion.errors import DicomReadError, InputRejected, MedfusionError

logger = logging.getLogger(__name__)


#: Exceptions pydicom, numpy and the decoder plugins are known to raise on bad input.
READ_ERRORS: tuple[type[BaseException], ...] = (
    InvalidDicomError,
    BytesLengthException,  # an element's length does not fit its VR (corrupt header)
    ValueError,  # includes UnicodeDecodeError
    TypeError,
    AttributeError,
    LookupError,  # KeyError, IndexError
    ArithmeticError,  # OverflowError, ZeroDivisionError
    RuntimeError,  # includes NotImplementedError, RecursionError
    EOFError,
    OSError,
    struct.error,
    zlib.error,
    MemoryError,
    BufferError,
    AssertionError,
)


def guard(path: Path, fn: Any) -> Any:
    """Run ``fn()`` and turn any failure into a :class:`~medfusion.errors.DicomReadError` for ``path``."""
    try:
        return fn()
    except DicomReadError:
        raise
    except READ_ERRORS as exc:
        raise DicomReadError(path, reason(exc)) from exc
    except Exception as exc:
        if isinstance(exc, MedfusionError) and not isinstance(exc, InputRejected):
            raise  # a set-up error (e.g. no usable pseudonym salt) is not this file's fault: stop, don't reject
        logger.warning("unexpected %s while reading %s", type(exc).__name__, path, exc_info=True)
        raise DicomReadError(path, f"unexpected error: {reason(exc)}") from exc


def reason(exc: BaseException) -> str:
    """A short one-line reason from an exception, quoted values redacted (they may be patient data)."""
    if isinstance(exc, MemoryError):
        return "out of memory while decoding"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, InvalidDicomError):
        return "not a DICOM file (no DICM preamble and no valid dataset)"
    if isinstance(exc, zlib.error):
        return f"deflated data is corrupt or not deflated ({exc})"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if lines and lines[0].startswith("Unable to decode as exceptions were raised by all available plugins"):
        text = "pixel data decode failed: " + " | ".join(lines[1:3])
    else:
        text = " ".join(lines[:3]) if lines else ""
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    text = re.sub(r"'[^']*'", "'...'", text)
    return text if len(text) <= 240 else text[:237] + "..."


#: pydicom's loggers (records are created on these; filters don't see propagated records).
_PYDICOM_LOGGERS = ("pydicom", "pydicom.pixels.decoders.base", "pydicom.pixels.utils")


def _redact(message: str) -> str:
    """First line of a pydicom message with quoted values (possibly patient data) removed."""
    first = message.splitlines()[0] if message else ""
    return re.sub(r"'[^']*'", "'...'", first)[:300]


class _RouteToDebug(logging.Filter):
    """Drops pydicom's log records, re-logging each distinct message once at DEBUG, redacted."""

    def __init__(self, path: Path, seen: set[str]) -> None:
        super().__init__()
        self.path = path
        self.seen = seen

    def filter(self, record: logging.LogRecord) -> bool:
        _log_once(self.path, self.seen, record.levelname.lower(), record.getMessage())
        return False


def _log_once(path: Path, seen: set[str], kind: str, message: str) -> None:
    text = _redact(message)
    if text and text not in seen:
        seen.add(text)
        logger.debug("%s: pydicom %s: %s", path.name, kind, text)


@contextmanager
def pydicom_warnings(path: Path) -> Iterator[None]:
    """Route pydicom's warnings and log records raised inside the block to DEBUG, once each.

    pydicom reports invalid values both with :func:`warnings.warn` and on its ``pydicom`` logger,
    quoting the value (which may be a patient name or birth date): here both are captured,
    redacted and logged once at DEBUG by this module's logger. Note that
    :func:`warnings.catch_warnings` and logger filters are process-global: readers are meant to
    run sequentially or in worker processes (DataLoader workers).
    """
    seen: set[str] = set()
    route = _RouteToDebug(path, seen)
    loggers = [logging.getLogger(name) for name in _PYDICOM_LOGGERS]
    for pydicom_logger in loggers:
        pydicom_logger.addFilter(route)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                for item in caught:
                    _log_once(path, seen, item.category.__name__, str(item.message))
    finally:
        for pydicom_logger in loggers:
            pydicom_logger.removeFilter(route)
