"""Finding codes of the labels: which coded concept an SR writes for ``nodule``, ``effusion``...

:data:`DEFAULT_CODES` gives SNOMED CT (``SCT``) concepts where one matches the label; every other
label is coded in medfusion's private scheme :data:`PRIVATE_SCHEME` with the label name as its code
value. A site replaces or adds codes with a code-map file (YAML or JSON, one entry per label)::

    nodule: {value: "427359005", scheme: SCT, meaning: "Solitary nodule of lung"}
    lung_opacity: {value: "RID28530", scheme: RADLEX, meaning: "opacity"}

See ``docs/dicom_sr.md`` for the table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from medfusion.errors import MedfusionError

#: Coding scheme designator of medfusion's private codes (a ``99`` prefix marks a private scheme).
PRIVATE_SCHEME = "99MEDFUSION"
PRIVATE_SCHEME_NAME = "medfusion finding labels"


@dataclass(frozen=True)
class FindingCode:
    """One coded concept (DICOM Code Sequence item).

    Attributes:
        value: Code value (``8186001``).
        scheme: Coding scheme designator (``SCT``, ``RADLEX``, ``99MEDFUSION``...).
        meaning: Code meaning (``Cardiomegaly``).
    """

    value: str
    scheme: str
    meaning: str


#: SNOMED CT concepts of the labels medfusion ships (demo and chest X-ray label sets).
DEFAULT_CODES: dict[str, FindingCode] = {
    "atelectasis": FindingCode("46621007", "SCT", "Atelectasis"),
    "cardiomegaly": FindingCode("8186001", "SCT", "Cardiomegaly"),
    "consolidation": FindingCode("95436008", "SCT", "Lung consolidation"),
    "edema": FindingCode("19242006", "SCT", "Pulmonary edema"),
    "effusion": FindingCode("60046008", "SCT", "Pleural effusion"),
    "pleural_effusion": FindingCode("60046008", "SCT", "Pleural effusion"),
    "fracture": FindingCode("125605004", "SCT", "Fracture of bone"),
    "nodule": FindingCode("786838002", "SCT", "Pulmonary nodule"),
    "pneumonia": FindingCode("233604007", "SCT", "Pneumonia"),
    "pneumothorax": FindingCode("36118008", "SCT", "Pneumothorax"),
}


def private_code(label: str) -> FindingCode:
    """The private-scheme code of ``label`` (value = the label, meaning = the label in words)."""
    return FindingCode(label, PRIVATE_SCHEME, label.replace("_", " "))


class CodeMap:
    """Label -> :class:`FindingCode`: the site's file over :data:`DEFAULT_CODES` over the private scheme.

    Args:
        overrides: The site's codes by label (they win over the defaults).
    """

    def __init__(self, overrides: Mapping[str, FindingCode] | None = None) -> None:
        self.codes = {**DEFAULT_CODES, **dict(overrides or {})}

    def __getitem__(self, label: str) -> FindingCode:
        return self.codes.get(label) or private_code(label)

    def private_labels(self, labels: Sequence[str]) -> list[str]:
        """The labels of ``labels`` coded in :data:`PRIVATE_SCHEME`."""
        return [label for label in labels if self[label].scheme == PRIVATE_SCHEME]

    @classmethod
    def from_file(cls, path: str | Path | None) -> CodeMap:
        """Read a site's code-map file (YAML or JSON: ``label: {value, scheme, meaning}``); None: defaults.

        Raises:
            MedfusionError: The file cannot be read, is not a mapping, or an entry lacks a field.
        """
        if path is None:
            return cls()
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise MedfusionError(f"{path}: cannot read the SR code map: {exc}") from None
        if not isinstance(data, dict):
            raise MedfusionError(f"{path}: the SR code map must map labels to {{value, scheme, meaning}}")
        codes: dict[str, FindingCode] = {}
        for label, entry in data.items():
            fields = ("value", "scheme", "meaning")
            if not isinstance(entry, dict) or any(not str(entry.get(f) or "").strip() for f in fields):
                raise MedfusionError(f"{path}: label {label!r} needs value, scheme and meaning")
            codes[str(label)] = FindingCode(*(str(entry[f]).strip() for f in fields))
        return cls(codes)
