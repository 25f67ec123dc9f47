"""Which images of a study a model reads: ordered series selection rules, first match wins.

A study sent to a model often holds more than it was trained on: a lateral next to the frontal view, a
scout or a derived reformat next to the acquired series, secondary captures, the other breast. A
:class:`SeriesRuleSet` says, in the config (``data.series_rules``) and then in the model's
preprocessing spec, which images count: its rules are tried in order on the instances' headers, and
the first rule any instance matches decides. A study no rule matches is not guessed at: it is
rejected with the reason ``no series matched rule set <name>`` (batch scoring dead-letters it).

The default, ``frontal-first``, keeps frontal (PA/AP) views first and then takes anything, as
medfusion always did.

Imports: pydantic, :mod:`medfusion.errors`.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from medfusion.errors import DicomReadError

#: ``ImageType`` value 1 of acquired images, and of images derived from them.
_ORIGINAL, _DERIVED = "ORIGINAL", "DERIVED"

#: One instance: its file and its PHI-free header (:func:`~medfusion.ingest.dicom.read.read_dicom_header`).
Header = tuple[Path, dict[str, Any]]


def _upper(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(str(v).strip().upper() for v in values)


class SeriesRule(BaseModel):
    """Conditions on one instance's header; an empty condition accepts anything.

    Attributes:
        name: Shown in logs and errors (default: the rule's position).
        modality: Accepted ``Modality`` values (e.g. ``[CR, DX]``).
        body_part: Accepted ``BodyPartExamined`` values (e.g. ``[CHEST]``).
        view_position: Accepted ``ViewPosition`` values (e.g. ``[PA, AP]``).
        image_type: ``original`` (``ImageType`` ORIGINAL, with PRIMARY when ``primary_only``),
            ``derived`` (DERIVED), or ``any``.
        primary_only: With ``image_type: original``, also require PRIMARY (value 2).
        laterality: Accepted ``ImageLaterality`` / ``Laterality`` values (``L``, ``R``, ``B``).
        min_rows: Smallest accepted ``Rows``.
        min_columns: Smallest accepted ``Columns``.

    Values are compared case-insensitively; an instance without the tag fails a condition on it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    modality: tuple[str, ...] = ()
    body_part: tuple[str, ...] = ()
    view_position: tuple[str, ...] = ()
    image_type: Literal["any", "original", "derived"] = "any"
    primary_only: bool = False
    laterality: tuple[str, ...] = ()
    min_rows: int = Field(0, ge=0)
    min_columns: int = Field(0, ge=0)

    @field_validator("modality", "body_part", "view_position", "laterality", mode="after")
    @classmethod
    def _normalise(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return _upper(values)

    @property
    def accepts_anything(self) -> bool:
        """Whether every instance matches (no condition set)."""
        return self == SeriesRule(name=self.name)

    def matches(self, meta: dict[str, Any]) -> bool:
        """Whether an instance's header meets every condition."""
        for values, key in (
            (self.modality, "modality"),
            (self.body_part, "body_part"),
            (self.view_position, "view_position"),
            (self.laterality, "laterality"),
        ):
            if values and str(meta.get(key) or "").strip().upper() not in values:
                return False
        if meta.get("rows", 0) < self.min_rows or meta.get("columns", 0) < self.min_columns:
            return False
        if self.image_type != "any":
            image_type = [str(v).strip().upper() for v in meta.get("image_type") or []]
            wanted = _ORIGINAL if self.image_type == "original" else _DERIVED
            if not image_type or image_type[0] != wanted:
                return False
            if self.image_type == "original" and self.primary_only and image_type[1:2] != ["PRIMARY"]:
                return False
        return True


class SeriesRuleSet(BaseModel):
    """Ordered rules: the first rule that any instance of the study matches selects the images.

    Attributes:
        name: Named in the rejection of a study no rule matches.
        rules: The rules, in order (at least one).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "frontal-first"
    rules: tuple[SeriesRule, ...] = Field(
        (SeriesRule(name="frontal", view_position=("PA", "AP")), SeriesRule(name="any image")), min_length=1
    )

    @property
    def accepts_anything(self) -> bool:
        """Whether some rule matches every instance (then no study is ever rejected by the set)."""
        return any(rule.accepts_anything for rule in self.rules)

    def select(self, headers: list[Header], *, whole_series: bool) -> list[Header]:
        """The instances the first matching rule selects.

        Args:
            headers: The study's instances with their headers (any order).
            whole_series: For a 3D model: every matching instance of one series (the series with the
                most matching instances; ties: the smallest SeriesInstanceUID). Otherwise the matching
                instances of all series.

        Returns:
            The selected instances sorted by (InstanceNumber, missing last; path); never empty.

        Raises:
            DicomReadError: No rule matches any instance (the error names the first file and says
                which values the study had).
        """
        for rule in self.rules:
            matched = [h for h in headers if rule.matches(h[1])]
            if not matched:
                continue
            if whole_series:
                by_series: dict[str, list[Header]] = defaultdict(list)
                for h in matched:
                    by_series[str(h[1].get("series_uid") or "")].append(h)
                matched = min(by_series.items(), key=lambda item: (-len(item[1]), item[0]))[1]
            return sorted(matched, key=_instance_order)
        first = min((h[0] for h in headers), default=Path("<empty study>"))
        raise DicomReadError(first, f"no series matched rule set {self.name!r} ({_describe(headers)})")


def _instance_order(header: Header) -> tuple[bool, int, str]:
    number = header[1].get("instance_number")
    return number is None, number or 0, str(header[0])


def _describe(headers: list[Header]) -> str:
    """What the study holds, in the terms rules use (no identifiers)."""

    def values(key: str) -> str:
        found = sorted({str(m.get(key)) for _, m in headers if m.get(key)})
        return "/".join(found) or "none"

    series = len({m.get("series_uid") for _, m in headers})
    return (
        f"{len(headers)} instance(s) in {series} series; modality {values('modality')}, "
        f"view {values('view_position')}, body part {values('body_part')}"
    )
