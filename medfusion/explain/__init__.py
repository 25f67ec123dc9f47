"""Explanations of medfusion predictions, and how faithful they are.

* :func:`explain_study` -> :class:`StudyExplanation`: image heatmaps (``cross_attention``, ``gradcam``),
  report token scores (``attention``, ``gradient``) and per-modality logit contributions.
* :func:`overlay_rgb`, :func:`explanation_figure`: rendering for the review app and MLflow.
* :mod:`medfusion.explain.faithfulness`: pointing game and top-k token hit rate on the demo cohort.

See ``docs/explanations.md``.
"""

from medfusion.explain.explanation import METHODS, StudyExplanation, explain_study, modality_contributions
from medfusion.explain.render import explanation_figure, overlay_rgb, top_tokens

__all__ = [
    "METHODS",
    "StudyExplanation",
    "explain_study",
    "explanation_figure",
    "modality_contributions",
    "overlay_rgb",
    "top_tokens",
]
