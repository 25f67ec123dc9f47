"""The viewer as a Streamlit component (``st.components.v2``, inline JS/CSS: no npm build step).

The browser gets the windowed frame at full resolution as a PNG and does zoom (wheel), pan (drag),
fit/1:1 and two horizontal calipers; it sends back only the calipers, in image pixels
(:mod:`.geometry`), which :func:`read_calipers` checks against the image before anything uses them.
"""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from medfusion.review.viewer.geometry import Caliper

#: Component name (unique in the app).
NAME = "medfusion_viewer"
#: Caliper names, in the order they are drawn.
CALIPERS = ("cardiac", "thoracic")


@functools.cache
def _component() -> Any:
    import streamlit as st

    package = files("medfusion.review.viewer")
    return st.components.v2.component(
        NAME,
        js=package.joinpath("viewer.js").read_text(encoding="utf-8"),
        css=package.joinpath("viewer.css").read_text(encoding="utf-8"),
        isolate_styles=False,  # plain DOM: the page's tests can find the viewer's elements
    )


@dataclass(frozen=True)
class Calipers:
    """The calipers drawn on one frame (``key``), in image pixels; either may be missing."""

    key: str
    cardiac: Caliper | None = None
    thoracic: Caliper | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the component."""
        return {name: c.as_dict() for name in CALIPERS if (c := getattr(self, name)) is not None}


def read_calipers(value: Any, key: str, shape: tuple[int, int]) -> Calipers | None:
    """The component's ``calipers`` state, if it belongs to frame ``key``; each caliper clipped to the image.

    Args:
        value: ``{"key": ..., "cardiac": {x0, x1, y}, "thoracic": {...}}`` from the browser (untrusted).
        key: The frame shown now.
        shape: (rows, cols) of that frame.
    """
    if not isinstance(value, dict) or value.get("key") != key:
        return None
    return Calipers(key, Caliper.parse(value.get("cardiac"), shape), Caliper.parse(value.get("thoracic"), shape))


def show(
    png: bytes, shape: tuple[int, int], key: str, calipers: Calipers | None, *, widget_key: str, height: int = 560
) -> Any:
    """Mount the viewer; returns the component's ``calipers`` state (or None before any drawing).

    Args:
        png: The windowed frame, full resolution.
        shape: (rows, cols) of the frame.
        key: Identifies the frame (instance and frame index): the view and calipers reset when it changes.
        calipers: Calipers to draw (those saved for this frame), or None.
        widget_key: Streamlit key of the component (one per study).
        height: Viewport height, CSS pixels.
    """
    data = {
        "src": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
        "width": shape[1],
        "height": shape[0],
        "key": key,
        "calipers": calipers.as_dict() if calipers else {},
        "viewport_height": height,
    }
    result = _component()(key=widget_key, data=data, default={"calipers": None}, on_calipers_change=lambda: None)
    return getattr(result, "calipers", None)
