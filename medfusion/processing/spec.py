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
#: How image intensities (display values in ``[0, 1]`` after resizing) are normalised: ``zscore`` per
#: image and channel; ``imagenet`` with the ImageNet mean and std (torchvision weights); ``xrv`` to
#: ``[-1024, 1024]`` (torchxrayvision weights).
Intensity = Literal["zscore", "imagenet", "xrv"]
#: The normalisation each pretrained-weights layout was trained with (``monai``: medfusion's own, ``zscore``).
SOURCE_INTENSITY: dict[str, Intensity] = {"monai": "zscore", "torchvision": "imagenet", "xrv": "xrv"}
#: Per-channel (mean, std) of the fixed normalisations, applied to values in ``[0, 1]``.
INTENSITY_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "xrv": ((0.5,), (1 / 2048,)),  # (x - 0.5) * 2048 = (2x - 1) * 1024, torchxrayvision's scaling
}


def intensity_stats(intensity: Intensity, channels: int) -> tuple[list[float], list[float]] | None:
    """Per-channel ``(mean, std)`` of a fixed normalisation for ``channels`` channels; None for ``zscore``.

    One channel takes the average of multi-channel statistics (the grey equivalent of ImageNet's,
    0.449 and 0.226, for RGB filters summed into one); one-channel statistics repeat over channels.

    Raises:
        MedfusionError: The statistics have another number of channels (neither 1 nor ``channels``).
    """
    if intensity == "zscore":
        return None
    mean, std = INTENSITY_STATS[intensity]
    if len(mean) == channels:
        return list(mean), list(std)
    if channels == 1:
        return [sum(mean) / len(mean)], [sum(std) / len(std)]
    if len(mean) == 1:
        return list(mean) * channels, list(std) * channels
    raise MedfusionError(f"{intensity} normalisation has {len(mean)} channels; the image has {channels}")


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
        intensity: Intensity normalisation (``zscore``; ``imagenet`` or ``xrv`` for trunks pretrained
            that way, see :data:`SOURCE_INTENSITY`). Cards written before it existed read as ``zscore``.
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
    intensity: Intensity = "zscore"

    @classmethod
    def from_config(cls, config: Config) -> PreprocessingSpec:
        """The spec of a run configuration (``data.*`` and the image encoder's dims and channels).

        ``data.intensity: auto`` is the normalisation of ``image_encoder.pretrained_layout``'s source.
        """
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
            intensity=SOURCE_INTENSITY[e.pretrained_layout] if d.intensity == "auto" else d.intensity,
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
