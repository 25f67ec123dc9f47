"""One study's explanation: heatmaps, token scores and modality contributions (see ``docs/explanations.md``).

>>> ex = explain_study(predictor, StudyInput(image_paths=["a.dcm"], report_text="FINDINGS: ..."))
>>> ex.heatmaps["gradcam"].shape, ex.token_scores["gradient"].shape   # (L, H, W), (L, T)

Methods that do not apply to a model or a study are absent from the dicts: ``cross_attention`` needs
the ``hybrid`` fusion and both modalities; ``gradcam`` a ResNet/DenseNet image encoder (2D) and an
image; ``saliency`` any 2D image; the token methods a text encoder and report text.

Thread-safe: see :mod:`medfusion.explain.workspace` (private model copies, one lock per model, a
``checkpoint`` to abandon work nobody wants any more).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from medfusion.errors import MedfusionError
from medfusion.explain.image import LabelStep, cross_attention_heatmaps
from medfusion.explain.text import attention_rollout, integrated_gradients, token_spans
from medfusion.explain.workspace import (
    Checkpoint,
    Workspace,
    exclusive,
    guarded,
    no_checkpoint,
)
from medfusion.inference import Predictor, StudyInput
from medfusion.models.calibration import apply_temperature
from medfusion.models.model import FusionModelOutput
from medfusion.processing.sample import Sample

#: Image heatmap methods, then token methods.
IMAGE_METHODS = ("cross_attention", "gradcam", "saliency")
TOKEN_METHODS = ("attention", "gradient")
METHODS = IMAGE_METHODS + TOKEN_METHODS


@dataclass
class StudyExplanation:
    """Why the model scored a study as it did.

    Attributes:
        labels: Label names.
        probabilities: (L,) calibrated probabilities (as :class:`~medfusion.inference.Prediction`).
        thresholds: (L,) decision thresholds.
        image: (H, W) model-input image min-max scaled to [0, 1] for display, or None without image.
        heatmaps: Method (``cross_attention``, ``gradcam``, ``saliency``) -> (L, H, W) in [0, 1], same
            H, W as ``image``.
        report_text: The text the model read (after section selection).
        token_spans: (T,) character spans of the tokens in ``report_text``; ``(0, 0)`` for special tokens.
        token_scores: Method (``attention``, ``gradient``) -> (L, T), >= 0, each label's row scaled to max 1.
        modality_contributions: Slot (``image``, ``text``, ``joint``) -> (L,) signed contribution to
            each label's logit (before temperature); they sum to the logit (see :func:`modality_contributions`).
        provenance: ``model_id``, ``medfusion_version``, ``status`` (``UNVERIFIED``).
    """

    labels: list[str]
    probabilities: np.ndarray
    thresholds: np.ndarray
    image: np.ndarray | None
    heatmaps: dict[str, np.ndarray] = field(default_factory=dict)
    report_text: str = ""
    token_spans: list[tuple[int, int]] = field(default_factory=list)
    token_scores: dict[str, np.ndarray] = field(default_factory=dict)
    modality_contributions: dict[str, np.ndarray] = field(default_factory=dict)
    provenance: dict[str, str] = field(default_factory=dict)

    def tokens(self) -> list[str]:
        """The text of each token (``""`` for special tokens)."""
        return [self.report_text[a:b] for a, b in self.token_spans]


def modality_contributions(out: FusionModelOutput, b: int = 0) -> dict[str, np.ndarray]:
    """Signed contribution of each fusion slot to each label's logit, for sample ``b``.

    The head is affine and the slot weights sum to 1, so ``logit = sum_k w_k * head(slot_k)``
    exactly. The contribution of modality ``m`` is ``w_m * modality_logit_m`` (its own late logit,
    head bias included, times its mixing weight); ``joint`` is the rest, ``logit - sum_m w_m *
    modality_logit_m`` (the cross-attention slot of ``hybrid``; the whole logit of ``concat``). An
    absent modality has weight 0, so contributes 0. With stacking (:mod:`medfusion.models.stacking`)
    modality ``m``'s weight is per label: ``w_fused,l * w_m + w_stack_m,l``.

    Returns:
        Slot -> (L,) float array; the values sum to ``out.logits[b]``.
    """
    logits = out.logits[b].detach().float().cpu()
    parts: dict[str, np.ndarray] = {}
    rest = logits.clone()
    stacked = out.stack_weights  # stacking: logit = w_fused * fused + sum_m w_m * modality_logit_m, per label
    for m, mlogits in sorted(out.modality_logits.items()):
        w: float | torch.Tensor = float(out.modality_weights[m][b]) if m in out.modality_weights else 1.0
        if stacked:
            w = stacked["fused"][b].detach().float().cpu() * w + stacked[m][b].detach().float().cpu()
        part = w * mlogits[b].detach().float().cpu()
        parts[m] = part.numpy()
        rest -= part
    if "joint" in out.modality_weights or not parts:
        parts["joint"] = rest.numpy()
    return parts


def _unknown(methods: Sequence[str]) -> list[str]:
    return [m for m in methods if m not in METHODS]


def explain_study(
    predictor: Predictor, study: StudyInput, methods: Sequence[str] = METHODS, *, checkpoint: Checkpoint = no_checkpoint
) -> StudyExplanation:
    """Score one study and explain the scores with the requested methods.

    Safe to call from any number of threads on one shared predictor: every pass runs on the model's
    private :class:`~medfusion.explain.workspace.Workspace`, one explanation at a time, and the
    predictor's model is never modified (no hooks, no gradients, no mode switches).

    Args:
        predictor: A loaded model (:class:`~medfusion.inference.Predictor`).
        study: The study (image paths and/or report text).
        methods: Any of ``cross_attention``, ``gradcam``, ``saliency``, ``attention``, ``gradient``.
        checkpoint: ``checkpoint(step, fraction_done)``, called while waiting for another thread's
            explanation of the same model and before each method and label; whatever it raises
            abandons the explanation (the workspace is released).

    Returns:
        The :class:`StudyExplanation`; methods that do not apply are absent.

    Raises:
        InputRejected: The study's image cannot be read.
        MedfusionError: An unknown method is requested.
        ExplanationAbandoned: The process is exiting (raised at the next step).
    """
    if unknown := _unknown(methods):
        raise MedfusionError(f"unknown explanation method(s) {unknown}; choose from {list(METHODS)}")
    sample = predictor.preprocess(study)  # reads the image (InputRejected if it cannot): outside the workspace lock
    with exclusive(predictor.loaded.model, checkpoint) as ws:
        return _explain(ws, predictor, sample, methods, guarded(checkpoint))


def _explain(
    ws: Workspace, predictor: Predictor, sample: Sample, methods: Sequence[str], checkpoint: Checkpoint
) -> StudyExplanation:
    """:func:`explain_study` once the workspace is held: every pass on ``ws``'s copies."""
    loaded, model = predictor.loaded, ws.model.eval()
    n_labels = len(loaded.labels)
    checkpoint("forward", 0.0)
    batch = {k: v.to(loaded.device) for k, v in predictor.collate([sample]).items()}
    has_image = sample.image_present and batch["image"].ndim == 4  # 2D images only are displayed
    has_text = sample.text_present and model.text_encoder is not None

    with torch.no_grad():
        out = model(batch)

    explanation = StudyExplanation(
        labels=list(loaded.labels),
        probabilities=apply_temperature(out.logits.detach().float().cpu(), loaded.temperature)[0],
        thresholds=loaded.thresholds.copy(),
        image=None,
        report_text=sample.report,
        modality_contributions=modality_contributions(out),
        provenance=dict(predictor.provenance),
    )
    requested = [m for m in METHODS if m in methods]

    def step(method: str) -> LabelStep:
        """Checkpoint before each label of ``method`` (fraction: methods done, labels done)."""
        base = requested.index(method) / len(requested)
        return lambda label: checkpoint(method, base + label / (n_labels * len(requested)))

    if has_image:
        image = batch["image"][0].float().mean(0)  # (H, W), z-scored model input
        lo, hi = image.min(), image.max()
        explanation.image = ((image - lo) / (hi - lo).clamp(min=1e-12)).cpu().numpy().astype(np.float32)
        size = (int(image.shape[0]), int(image.shape[1]))
        if "cross_attention" in methods and out.attentions is not None and sample.text_present:
            mask = batch["attention_mask"][0].bool()
            explanation.heatmaps["cross_attention"] = cross_attention_heatmaps(
                out.attentions[0].detach(), mask, out.image_grid, size, n_labels
            )
        if "gradcam" in methods:
            step("gradcam")(0)
            explainer = ws.gradcam(tuple(batch["image"].shape[1:]))
            if explainer.layer is not None:
                explanation.heatmaps["gradcam"] = explainer.heatmaps(batch, n_labels, on_label=step("gradcam"))
        if "saliency" in methods:
            explanation.heatmaps["saliency"] = ws.saliency().heatmaps(batch, n_labels, on_label=step("saliency"))

    if has_text:
        explanation.token_spans = token_spans(loaded.tokenizer, sample.report, loaded.preprocessing.max_tokens)
        real = torch.tensor([b > a for a, b in explanation.token_spans], device=loaded.device)  # (T,)
        if len(real) != batch["input_ids"].shape[1]:
            raise MedfusionError(f"tokenizer gave {len(real)} spans for {batch['input_ids'].shape[1]} tokens")
        if "attention" in methods:
            step("attention")(0)
            if model.text_encoder is None:  # has_text says otherwise
                raise MedfusionError("attention rollout needs a model with a text encoder")
            explanation.token_scores["attention"] = attention_rollout(
                ws.eager_transformer(),
                model.text_encoder.pooling,
                batch["input_ids"],
                batch["attention_mask"],
                real,
                n_labels,
            )
        if "gradient" in methods:
            explanation.token_scores["gradient"] = integrated_gradients(model, batch, real, on_label=step("gradient"))
    checkpoint("done", 1.0)
    return explanation
