"""What the study view draws: the DICOM image windowed, the heatmap overlay, the highlighted report.

Pure functions of arrays and text (no Streamlit), so the app stays a thin page and this is tested.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medfusion.processing.spec import FramePolicy


@dataclass(frozen=True)
class DisplayImage:
    """The study's image as the model read it, at full resolution.

    Attributes:
        values: (H, W) display values in [0, 1] (stored VOI window/LUT applied, frame chosen by the
            model's frame policy, colour converted to luminance).
        window: (center, width) of the stored window in modality units, or None (colour images).
        modality: DICOM Modality (e.g. ``DX``), or None.
        sop_uid: SOPInstanceUID of the instance the model read (the heatmaps belong to it), or None.
        frame: The frame the model read (frame policy ``first``/``middle``), or None (``mean`` of all frames).
    """

    values: np.ndarray
    window: tuple[float, float] | None
    modality: str | None
    sop_uid: str | None = None
    frame: int | None = 0

    @property
    def default_window(self) -> tuple[float, float]:
        """The stored window, or ``(0.5, 1.0)`` in display units when there is none."""
        return self.window or (0.5, 1.0)


def load_display_image(paths: Sequence[str], frame_policy: FramePolicy = "middle") -> DisplayImage:
    """Read the instance the model reads (same selection rules as training), full resolution.

    Raises:
        InputRejected: The image cannot be read (``DicomReadError``, raised as is: no MONAI
            ``Compose`` wraps it here).
    """
    from medfusion.processing.transforms import LoadDicomd  # torch and MONAI: not for the worklist

    loaded = LoadDicomd("image", frame_policy=frame_policy, dicom_meta_key="meta")({"image": list(paths)})
    meta = loaded["meta"]
    window = meta.get("window")
    return DisplayImage(
        values=loaded["image"][0].numpy().astype(np.float32),
        window=(float(window[0]), float(window[1])) if window else None,
        modality=meta.get("modality"),
        sop_uid=meta.get("sop_uid"),
        frame={"first": 0, "middle": int(meta.get("frames") or 1) // 2}.get(frame_policy),
    )


def apply_window(image: DisplayImage, center: float, width: float) -> np.ndarray:
    """Re-window the image: (H, W) in [0, 1].

    Display values map linearly back to modality units through the stored window
    (``v = c0 - w0/2 + p * w0``), then the new window applies: ``clip((v - (c - w/2)) / w, 0, 1)``.
    Values the stored window clipped stay clipped, so widening beyond it shows no new detail.
    """
    c0, w0 = image.default_window
    modality = c0 - w0 / 2 + image.values * w0
    return np.clip((modality - (center - width / 2)) / max(width, 1e-6), 0.0, 1.0).astype(np.float32)


def resize_map(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a (h, w) map in [0, 1] to ``shape`` (H, W): the heatmap over the full image."""
    from PIL import Image

    if heatmap.shape == shape:
        return heatmap.astype(np.float32)
    resized = Image.fromarray(heatmap.astype(np.float32), mode="F").resize(
        (shape[1], shape[0]), Image.Resampling.BILINEAR
    )
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def highlighted_report_html(
    text: str, spans: Sequence[tuple[int, int]], scores: np.ndarray | None, top_k: int = 12
) -> str:
    """The report as HTML with the ``top_k`` highest-scoring tokens highlighted (opacity = score).

    Args:
        text: The report text the model read.
        spans: (T,) character spans of the tokens; ``(0, 0)`` for special tokens.
        scores: (T,) scores in [0, 1], or None (plain text).
        top_k: How many tokens to highlight; the rest stay plain, so the evidence stands out.

    Returns:
        HTML (escaped text, ``<mark>`` elements, line breaks kept).
    """
    weights = np.zeros(len(text), dtype=np.float32)
    if scores is not None and len(spans):
        order = [i for i in np.argsort(-np.asarray(scores), kind="stable") if spans[i][1] > spans[i][0]][:top_k]
        for i in order:
            a, b = spans[i]
            weights[a:b] = np.maximum(weights[a:b], float(scores[i]))
    parts, i = [], 0
    while i < len(text):
        j = i
        while j < len(text) and weights[j] == weights[i]:
            j += 1
        chunk = html.escape(text[i:j]).replace("\n", "<br>")
        if weights[i] > 0:
            alpha = 0.25 + 0.65 * float(weights[i])
            parts.append(f'<mark style="background: rgba(255, 176, 0, {alpha:.2f}); padding: 0 1px">{chunk}</mark>')
        else:
            parts.append(chunk)
        i = j
    return "".join(parts)
