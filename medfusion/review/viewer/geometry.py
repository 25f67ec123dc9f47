"""Viewer geometry: screen <-> image coordinates under zoom and pan, and the cardiothoracic ratio.

The component (:mod:`.component`) draws the full-resolution image in a layer transformed by
``translate(tx, ty) scale(k)`` (CSS, origin top-left), with ``k = fit * zoom``: a point at
``(sx, sy)`` on screen, relative to the viewport's top-left corner, is at image pixel
``((sx - tx) / k, (sy - ty) / k)``. Calipers are stored in image pixels, so a width measured at
any zoom or pan is the same number. The browser does this in JavaScript; these are the same
formulas, for tests and for the server's checks of what the browser sends.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ViewTransform:
    """How the image layer is placed in the viewport.

    Attributes:
        scale: Screen pixels per image pixel (``fit * zoom``, > 0).
        tx: Horizontal offset of the image's top-left corner, screen pixels.
        ty: Vertical offset, screen pixels.
    """

    scale: float
    tx: float = 0.0
    ty: float = 0.0

    def to_image(self, sx: float, sy: float) -> tuple[float, float]:
        """Screen point (viewport pixels) -> image pixel coordinates (full resolution)."""
        return (sx - self.tx) / self.scale, (sy - self.ty) / self.scale

    def to_screen(self, x: float, y: float) -> tuple[float, float]:
        """Image pixel coordinates -> screen point (viewport pixels)."""
        return x * self.scale + self.tx, y * self.scale + self.ty

    def zoomed(self, factor: float, sx: float, sy: float) -> ViewTransform:
        """Zoom by ``factor`` keeping the image point under the screen point ``(sx, sy)`` fixed (wheel zoom)."""
        scale = self.scale * factor
        return ViewTransform(scale, sx - (sx - self.tx) * factor, sy - (sy - self.ty) * factor)

    def panned(self, dx: float, dy: float) -> ViewTransform:
        """Move the image by ``(dx, dy)`` screen pixels (drag pan)."""
        return ViewTransform(self.scale, self.tx + dx, self.ty + dy)


@dataclass(frozen=True)
class Caliper:
    """A horizontal segment in image pixels: from ``x0`` to ``x1`` at row ``y``."""

    x0: float
    x1: float
    y: float

    @property
    def width(self) -> float:
        """Horizontal length in image pixels."""
        return abs(self.x1 - self.x0)

    @classmethod
    def from_screen(cls, view: ViewTransform, start: tuple[float, float], end: tuple[float, float]) -> Caliper:
        """The caliper a drag from ``start`` to ``end`` (screen points) draws: horizontal at the start's row."""
        x0, y = view.to_image(*start)
        x1, _ = view.to_image(*end)
        return cls(x0, x1, y)

    @classmethod
    def parse(cls, value: Any, shape: tuple[int, int]) -> Caliper | None:
        """A caliper from the component's JSON ``{"x0", "x1", "y"}``, clipped to the image; None if unusable.

        Args:
            value: What the browser sent (untrusted).
            shape: (rows, cols) of the image.
        """
        if not isinstance(value, Mapping):
            return None
        try:
            x0, x1, y = (float(value[k]) for k in ("x0", "x1", "y"))
        except (KeyError, TypeError, ValueError):
            return None
        if not all(math.isfinite(v) for v in (x0, x1, y)):
            return None
        rows, cols = shape
        clip = lambda v, hi: min(max(v, 0.0), float(hi))  # noqa: E731
        caliper = cls(clip(x0, cols), clip(x1, cols), clip(y, rows))
        return caliper if caliper.width > 0 else None

    def as_dict(self) -> dict[str, float]:
        """JSON form for the component."""
        return {"x0": round(self.x0, 2), "x1": round(self.x1, 2), "y": round(self.y, 2)}


def cardiothoracic_ratio(cardiac: Caliper, thoracic: Caliper) -> float:
    """``cardiac.width / thoracic.width`` (a CTR above 0.5 on a PA film suggests cardiomegaly).

    Raises:
        ValueError: The thoracic width is zero.
    """
    if thoracic.width <= 0:
        raise ValueError("the thoracic width must be positive")
    return cardiac.width / thoracic.width
