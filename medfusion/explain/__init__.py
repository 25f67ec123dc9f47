"""Explanations of medfusion predictions, and how faithful they are.

* :func:`explain_study` -> :class:`StudyExplanation`: image heatmaps (``cross_attention``, ``gradcam``,
  ``saliency``), report token scores (``attention``, ``gradient``, ``occlusion``), signed word evidence
  (:mod:`.words`: word pieces merged, negation scopes) and per-modality logit contributions.
* :func:`overlay_rgb`, :func:`explanation_figure`: rendering for the review app and MLflow.
* :mod:`medfusion.explain.faithfulness`: pointing game and top-k token hit rate against exact random
  baselines; :mod:`.aopc`: deletion curves of word evidence against random and frequency-matched
  words; :mod:`.randomisation`: the model-parameter randomisation check of the image maps;
  :mod:`.checks`: their per-method verdicts kept in the model folder (all run by
  ``python benchmarks/faithfulness.py``).
* :mod:`.image`, :mod:`.text`: the image heatmap and token score methods; :mod:`.workspace`: private
  model copies and one lock per model, so explanations never disturb the scoring model and can be
  abandoned between steps.

May import: :mod:`medfusion.inference` (``Predictor``, ``StudyInput``), :mod:`medfusion.models`,
:mod:`medfusion.processing`, :mod:`medfusion.errors`. Never scoring, training, tracking or review (the
review app imports this package). See ``docs/explanations.md``.
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
