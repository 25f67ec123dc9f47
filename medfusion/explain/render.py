"""Rendering helpers: heatmap overlays (for the review app) and a matplotlib figure (for MLflow)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from medfusion.errors import MedfusionError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Colormap of heatmap overlays.
COLORMAP = "inferno"


def overlay_rgb(image: np.ndarray, heatmap: np.ndarray, opacity: float = 0.4, colormap: str = COLORMAP) -> np.ndarray:
    """Blend a heatmap over a grayscale image.

    Args:
        image: (H, W) display values in [0, 1].
        heatmap: (H, W) in [0, 1] (one label's map of :attr:`StudyExplanation.heatmaps`).
        opacity: Heatmap weight in [0, 1] (0: the image only, 1: the heatmap only).
        colormap: Matplotlib colormap name.

    Returns:
        (H, W, 3) uint8 RGB.

    Raises:
        MedfusionError: Shapes differ or ``opacity`` is outside [0, 1].
    """
    import matplotlib

    if image.shape != heatmap.shape or image.ndim != 2:
        raise MedfusionError(f"overlay needs two (H, W) arrays of one shape, got {image.shape} and {heatmap.shape}")
    if not 0.0 <= opacity <= 1.0:
        raise MedfusionError(f"opacity must be in [0, 1], got {opacity}")
    gray = np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=-1)  # (H, W, 3)
    colour = matplotlib.colormaps[colormap](np.clip(heatmap, 0, 1))[..., :3]  # (H, W, 3)
    return np.round(255 * ((1 - opacity) * gray + opacity * colour)).astype(np.uint8)


def top_tokens(explanation: Any, method: str, label: str, k: int = 10) -> list[tuple[str, float, tuple[int, int]]]:
    """The ``k`` highest-scoring tokens of a label: ``(token text, score, span)``, best first."""
    scores = explanation.token_scores[method][explanation.labels.index(label)]  # (T,)
    order = np.argsort(-scores, kind="stable")
    spans = explanation.token_spans
    return [(explanation.report_text[slice(*spans[i])], float(scores[i]), spans[i]) for i in order[:k] if scores[i] > 0]


def explanation_figure(
    explanation: Any, label: str, *, heatmap: str = "gradcam", tokens: str = "gradient", k: int = 12
) -> Figure:
    """A matplotlib figure of one label: image + heatmap, the top report tokens, the modality contributions.

    Args:
        explanation: A :class:`~medfusion.explain.explanation.StudyExplanation`.
        label: The label shown.
        heatmap: Heatmap method (panel left empty when absent).
        tokens: Token method (panel left empty when absent).
        k: Tokens shown.

    Returns:
        A ``matplotlib.figure.Figure`` (e.g. for ``mlflow.log_figure``); not attached to pyplot.
    """
    from matplotlib.figure import Figure

    idx = explanation.labels.index(label)
    fig = Figure(figsize=(12, 4), layout="constrained")
    ax_img, ax_tok, ax_mod = fig.subplots(1, 3, width_ratios=(1, 1.2, 0.8))
    if explanation.image is not None and heatmap in explanation.heatmaps:
        ax_img.imshow(overlay_rgb(explanation.image, explanation.heatmaps[heatmap][idx]))
        ax_img.set_title(f"{heatmap}: {label}")
    elif explanation.image is not None:
        ax_img.imshow(explanation.image, cmap="gray", vmin=0, vmax=1)
        ax_img.set_title("image (no heatmap)")
    else:
        ax_img.text(0.5, 0.5, "no image", ha="center", va="center")
    ax_img.axis("off")
    if tokens in explanation.token_scores:
        top = top_tokens(explanation, tokens, label, k)[::-1]
        ax_tok.barh([t for t, _, _ in top], [s for _, s, _ in top], color="tab:orange")
        ax_tok.set_xlim(0, 1)
        ax_tok.set_title(f"{tokens}: top tokens")
    else:
        ax_tok.text(0.5, 0.5, "no report", ha="center", va="center")
        ax_tok.axis("off")
    contributions = explanation.modality_contributions
    names = sorted(contributions)
    ax_mod.bar(names, [float(contributions[n][idx]) for n in names], color="tab:blue")
    ax_mod.axhline(0, color="black", linewidth=0.5)
    ax_mod.set_title(f"logit contributions (p={explanation.probabilities[idx]:.2f})")
    return fig
