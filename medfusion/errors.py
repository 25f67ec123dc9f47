"""Typed errors. Every error that concerns an input names the input and the reason.

Callers that process many inputs (batch scoring, cohort building) catch :class:`InputRejected`
and record ``(path, reason)``; anything else escaping is a bug.
"""

from __future__ import annotations

from pathlib import Path


class MedfusionError(Exception):
    """Base class of every error medfusion raises on purpose."""


class InputRejected(MedfusionError):
    """An input file or record cannot be used.

    Attributes:
        source: The file path (or record locator such as ``file.ndjson:line 3``).
        reason: A short human-readable reason, free of patient data.
    """

    def __init__(self, source: str | Path, reason: str) -> None:
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


class DicomReadError(InputRejected):
    """A DICOM file cannot be read or turned into an image."""


class ReportParseError(InputRejected):
    """A report (text, CSV row, FHIR resource) cannot be parsed."""


class ManifestError(InputRejected):
    """A manifest file is missing, malformed or inconsistent."""


class ConfigError(MedfusionError):
    """A configuration file is invalid; the message names the file and the key."""


class SiteSaltError(MedfusionError):
    """The pseudonym salt cannot be used; the message names its source and the reason, never the salt."""


class UnsafeModelFile(MedfusionError):
    """A weights file would need pickle (which can run arbitrary code) to load, so it is refused.

    Attributes:
        source: The file.
        reason: Why it is refused and what to do instead.
    """

    def __init__(self, source: str | Path, reason: str) -> None:
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")
