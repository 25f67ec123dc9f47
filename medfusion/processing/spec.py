"""What must be done to a study's inputs so that inference matches training: :class:`PreprocessingSpec`.

The spec is read off a run's :class:`~medfusion.config.Config` once (:meth:`PreprocessingSpec.from_config`),
travels in the model card (``medfusion_model.json``, key ``preprocessing``) and is the only input of
:class:`~medfusion.processing.preprocessor.Preprocessor`; nothing downstream reads preprocessing settings
from a config.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medfusion.errors import MedfusionError
from medfusion.ingest.dicom.selection import SeriesRuleSet

if TYPE_CHECKING:
    from medfusion.config import Config

#: How a multi-frame 2D image becomes one frame.
FramePolicy = Literal["first", "middle", "mean"]


class PreprocessingSpec(BaseModel):
    """Frozen preprocessing settings of one model.

    Attributes:
        image_size: Spatial size of the model's image input, ``(H, W)`` or ``(D, H, W)``.
        spatial_dims: 2 or 3.
        in_channels: Channels the image encoder expects; images with another count are rejected.
        frame_policy: Multi-frame reduction for 2D (``first``, ``middle``, ``mean``).
        max_pixels: Images with more pixels (rows * cols * frames) are refused before decoding.
        max_tokens: Longest token sequence, special tokens included (longer reports are truncated).
        report_sections: Report sections the model reads (``("full",)`` for the whole text).
        series_rules: Which of a study's images the model reads (ordered rules, first match wins).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_size: tuple[int, ...] = Field(min_length=2, max_length=3)
    spatial_dims: Literal[2, 3] = 2
    in_channels: int = Field(1, ge=1)
    frame_policy: FramePolicy = "middle"
    max_pixels: int = Field(64_000_000, ge=1)
    max_tokens: int = Field(64, ge=2)
    report_sections: tuple[str, ...] = ("full",)
    series_rules: SeriesRuleSet = SeriesRuleSet()

    @classmethod
    def from_config(cls, config: Config) -> PreprocessingSpec:
        """The spec of a run configuration (``data.*`` and the image encoder's dims and channels)."""
        d, e = config.data, config.image_encoder
        return cls(
            image_size=tuple(d.image_size),
            spatial_dims=e.spatial_dims,
            in_channels=e.in_channels,
            frame_policy=d.frame_policy,
            max_pixels=d.max_pixels,
            max_tokens=d.max_tokens,
            report_sections=tuple(d.report_sections),
            series_rules=d.series_rules,
        )

    @property
    def image_shape(self) -> tuple[int, ...]:
        """``(C, *image_size)``: the shape of one preprocessed image."""
        return (self.in_channels, *self.image_size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessingSpec:
        """Validate a dict written by :meth:`to_dict`.

        Raises:
            MedfusionError: A key is missing, unknown or of the wrong type (the message names it).
        """
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise MedfusionError(f"invalid preprocessing spec: {exc}") from None

    def to_json(self) -> str:
        """The spec as a JSON object."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> PreprocessingSpec:
        """Inverse of :meth:`to_json`.

        Raises:
            MedfusionError: Not JSON, or not a valid spec.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MedfusionError(f"invalid preprocessing spec: not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise MedfusionError(f"invalid preprocessing spec: expected a JSON object, got {type(data).__name__}")
        return cls.from_dict(data)
