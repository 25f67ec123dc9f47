"""One study's explanation: heatmaps, token scores and modality contributions (see ``docs/explanations.md``).

>>> ex = explain_study(predictor, StudyInput(image_paths=["a.dcm"], report_text="FINDINGS: ..."))
>>> ex.heatmaps["gradcam"].shape, ex.token_scores["gradient"].shape   # (L, H, W), (L, T)
>>> ex.word_scores["occlusion"].shape                                    # (L, W), signed

``labels`` limits the per-label passes (Grad-CAM, saliency, integrated gradients) to some labels,
so a viewer can explain the label it shows first and the rest on demand; ``computed`` says which
label rows each method holds (the other rows are 0).

Methods that do not apply to a model or a study are absent from the dicts: ``cross_attention`` needs
the ``hybrid`` fusion and both modalities; ``gradcam`` a ResNet/DenseNet image encoder (2D) and an
image; ``saliency`` any 2D image; the token and word methods a text encoder and report text.

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
from medfusion.explain.text import attention_rollout, integrated_gradients, occlusion, token_spans
from medfusion.explain.words import Word, negation_scopes, report_words, scale_rows, word_scores
from medfusion.explain.workspace import (
    Checkpoint,
    Workspace,
    exclusive,
    guarded,
    no_checkpoint,
)
from medfusion.inference import Predictor, StudyInput
from medfusion.models.model import FusionModelOutput
from medfusion.processing.sample import Sample

#: Image heatmap methods, then token methods.
IMAGE_METHODS = ("cross_attention", "gradcam", "saliency")
TOKEN_METHODS = ("attention", "gradient", "occlusion")
#: Methods whose scores have no sign of their own: their word scores take the negation scope's sign.
UNSIGNED_TOKEN_METHODS = ("attention", "gradient")
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
        token_scores: Method (``attention``, ``gradient``, ``occlusion``) -> (L, T), >= 0, each label's row
            scaled to max 1 (``occlusion``: each token carries its word's positive part).
        words: The report's words (word pieces merged; punctuation and special tokens in none), with
            their spans, tokens and negation (:func:`medfusion.explain.words.report_words`).
        word_scores: Method -> (L, W) signed word evidence, each row scaled to max ``|s| = 1``:
            ``occlusion`` is the logit drop when the word is deleted (its sign is the model's);
            ``attention``/``gradient`` sum their tokens' scores and are negative inside a negation scope.
        negation_scopes: Character ranges of ``report_text`` that a negation denies.
        available: Every method that applies to this model and study (computed or not).
        computed: Method -> label indices whose rows were computed (all labels unless ``labels`` was given).
        modality_contributions: Slot (``image``, ``text``, ``joint``) -> (L,) signed contribution to
            each label's logit (before calibration); they sum to the logit (see :func:`modality_contributions`).
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
    words: list[Word] = field(default_factory=list)
    word_scores: dict[str, np.ndarray] = field(default_factory=dict)
    negation_scopes: list[tuple[int, int]] = field(default_factory=list)
    available: tuple[str, ...] = ()
    computed: dict[str, frozenset[int]] = field(default_factory=dict)
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
    predictor: Predictor,
    study: StudyInput,
    methods: Sequence[str] = METHODS,
    *,
    labels: Sequence[str] | None = None,
    checkpoint: Checkpoint = no_checkpoint,
) -> StudyExplanation:
    """Score one study and explain the scores with the requested methods.

    Safe to call from any number of threads on one shared predictor: every pass runs on the model's
    private :class:`~medfusion.explain.workspace.Workspace`, one explanation at a time, and the
    predictor's model is never modified (no hooks, no gradients, no mode switches).

    Args:
        predictor: A loaded model (:class:`~medfusion.inference.Predictor`).
        study: The study (image paths and/or report text).
        methods: Any of ``cross_attention``, ``gradcam``, ``saliency``, ``attention``, ``gradient``,
            ``occlusion``.
        labels: Labels whose per-label passes run (default: all); the other rows are 0.
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
    if labels is not None and (bad := [lab for lab in labels if lab not in predictor.labels]):
        raise MedfusionError(f"unknown label(s) {bad}; the model has {list(predictor.labels)}")
    wanted = [predictor.labels.index(lab) for lab in labels] if labels is not None else None
    sample = predictor.preprocess(study)  # reads the image (InputRejected if it cannot): outside the workspace lock
    with exclusive(predictor.loaded.model, checkpoint) as ws:
        return _explain(ws, predictor, sample, methods, guarded(checkpoint), wanted)


def _explain(
    ws: Workspace,
    predictor: Predictor,
    sample: Sample,
    methods: Sequence[str],
    checkpoint: Checkpoint,
    wanted: list[int] | None = None,
) -> StudyExplanation:
    """:func:`explain_study` once the workspace is held: every pass on ``ws``'s copies."""
    loaded, model = predictor.loaded, ws.model.eval()
    n_labels = len(loaded.labels)
    rows = sorted(set(wanted)) if wanted is not None else list(range(n_labels))
    checkpoint("forward", 0.0)
    batch = {k: v.to(loaded.device) for k, v in predictor.collate([sample]).items()}
    has_image = sample.image_present and batch["image"].ndim == 4  # 2D images only are displayed
    has_text = sample.text_present and model.text_encoder is not None

    with torch.no_grad():
        out = model(batch)

    explanation = StudyExplanation(
        labels=list(loaded.labels),
        probabilities=loaded.calibration.probabilities(out.logits.detach().float().cpu())[0],
        thresholds=loaded.thresholds.copy(),
        image=None,
        report_text=sample.report,
        modality_contributions=modality_contributions(out),
        provenance=dict(predictor.provenance),
    )
    requested = [m for m in METHODS if m in methods]
    every = frozenset(range(n_labels))

    def step(method: str) -> LabelStep:
        """Checkpoint before each label of ``method`` (fraction: methods done, labels done)."""
        base = requested.index(method) / len(requested)
        return lambda label: checkpoint(method, base + label / (n_labels * len(requested)))

    available: list[str] = []

    if has_image:
        image = batch["image"][0].float().mean(0)  # (H, W), z-scored model input
        lo, hi = image.min(), image.max()
        explanation.image = ((image - lo) / (hi - lo).clamp(min=1e-12)).cpu().numpy().astype(np.float32)
        size = (int(image.shape[0]), int(image.shape[1]))
        if out.attentions is not None and sample.text_present:
            available.append("cross_attention")
            if "cross_attention" in methods:
                mask = batch["attention_mask"][0].bool()
                explanation.heatmaps["cross_attention"] = cross_attention_heatmaps(
                    out.attentions[0].detach(), mask, out.image_grid, size, n_labels
                )
                explanation.computed["cross_attention"] = every
        explainer = ws.gradcam(tuple(batch["image"].shape[1:]))
        if explainer.layer is not None:
            available.append("gradcam")
            if "gradcam" in methods:
                step("gradcam")(0)
                explanation.heatmaps["gradcam"] = explainer.heatmaps(
                    batch, n_labels, on_label=step("gradcam"), labels=rows
                )
                explanation.computed["gradcam"] = frozenset(rows)
        available.append("saliency")
        if "saliency" in methods:
            explanation.heatmaps["saliency"] = ws.saliency().heatmaps(
                batch, n_labels, on_label=step("saliency"), labels=rows
            )
            explanation.computed["saliency"] = frozenset(rows)

    if has_text:
        explanation.token_spans = token_spans(loaded.tokenizer, sample.report, loaded.preprocessing.max_tokens)
        real = torch.tensor([b > a for a, b in explanation.token_spans], device=loaded.device)  # (T,)
        if len(real) != batch["input_ids"].shape[1]:
            raise MedfusionError(f"tokenizer gave {len(real)} spans for {batch['input_ids'].shape[1]} tokens")
        explanation.words = report_words(sample.report, explanation.token_spans)
        explanation.negation_scopes = negation_scopes(sample.report)
        available += list(TOKEN_METHODS)
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
            explanation.computed["attention"] = every
        if "gradient" in methods:
            explanation.token_scores["gradient"] = integrated_gradients(
                model, batch, real, on_label=step("gradient"), labels=rows
            )
            explanation.computed["gradient"] = frozenset(rows)
        for method in UNSIGNED_TOKEN_METHODS:
            if method in explanation.token_scores:
                explanation.word_scores[method] = word_scores(explanation.token_scores[method], explanation.words)
        if "occlusion" in methods:
            step("occlusion")(0)
            drops = occlusion(model, batch, [w.tokens for w in explanation.words])  # (L, W) logit drops
            explanation.word_scores["occlusion"] = scale_rows(drops)
            explanation.token_scores["occlusion"] = _word_to_tokens(
                explanation.word_scores["occlusion"], explanation.words, len(real)
            )
            explanation.computed["occlusion"] = every
    explanation.available = tuple(m for m in METHODS if m in available)
    checkpoint("done", 1.0)
    return explanation


def _word_to_tokens(scores: np.ndarray, words: Sequence[Word], n_tokens: int) -> np.ndarray:
    """(L, W) signed word scores -> (L, T) token scores ``>= 0`` (each token its word's positive part)."""
    out = np.zeros((scores.shape[0], n_tokens), np.float32)
    for w, word in enumerate(words):
        out[:, list(word.tokens)] = np.clip(scores[:, w : w + 1], 0, None)
    return out
