"""Model-parameter randomisation check of the image heatmaps (Adebayo et al. 2018, "Sanity checks").

A heatmap that explains the model's output must change when the model's learnt weights are
destroyed. The layers are re-initialised cascading from the top (:func:`cascade`): the label head,
then the fusion and image projection, then the trunk's last stages (ResNet ``layer4``, ``layer3``;
DenseNet ``denseblock4``, ``denseblock3``). At each step every method's maps of the same studies
and labels are recomputed on the randomised copy and compared to the trained model's maps with

* the **Spearman rank correlation** of the pixels (ties averaged), and
* **SSIM** (``monai.metrics.SSIMMetric``, maps in ``[0, 1]``).

A method **fails** when its mean rank correlation at any step is at least :data:`MAX_CORRELATION`
(0.5, fixed before any measurement): its maps then survive the loss of the weights they claim to
explain (e.g. cross-attention does not depend on the head at all; an edge detector would survive
every step). Constant maps (all 0) are skipped: they rank nothing.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from medfusion.explain.explanation import IMAGE_METHODS, explain_study
from medfusion.explain.image import _STAGES
from medfusion.inference import Predictor, StudyInput
from medfusion.models.model import MedFusionModel

#: A method fails when its mean rank correlation with a randomised model's maps reaches this.
MAX_CORRELATION = 0.5

#: Trunk stages randomised after the head and the fusion, top first.
TRUNK_STEPS = 2


def rankdata(values: np.ndarray) -> np.ndarray:
    """1-based ranks of a 1-D array, ties given their average rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    average = np.cumsum(counts) - (counts - 1) / 2.0
    return average[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (flattened); NaN when either is constant."""
    ra, rb = rankdata(np.ravel(a)), rankdata(np.ravel(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(np.sqrt((ra**2).sum() * (rb**2).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two (H, W) maps in ``[0, 1]`` (``monai.metrics.SSIMMetric``, 2D, data range 1)."""
    from monai.metrics import SSIMMetric

    x = torch.as_tensor(np.asarray(a, np.float32))[None, None]
    y = torch.as_tensor(np.asarray(b, np.float32))[None, None]
    win = min(11, *x.shape[-2:]) | 1  # odd, at most the map
    value = SSIMMetric(spatial_dims=2, data_range=1.0, win_size=win)(x, y)
    return float(torch.as_tensor(value).mean())


def cascade(model: MedFusionModel) -> list[tuple[str, list[str]]]:
    """The cascading randomisation steps: ``(step name, module names randomised so far)``, top first."""
    steps: list[tuple[str, list[str]]] = [("head", ["head"])]
    top = ["head", "fusion"] + (["image_encoder.proj"] if model.image_encoder is not None else [])
    steps.append(("+fusion", top))
    encoder = model.image_encoder
    stages = next((s for cls, s in _STAGES.items() if encoder is not None and isinstance(encoder.trunk, cls)), ())
    names = list(top)
    for stage in stages[:TRUNK_STEPS]:
        names = [*names, f"image_encoder.trunk.{stage}"]
        steps.append((f"+{stage.split('.')[-1]}", names))
    return steps


def randomised(model: MedFusionModel, modules: Sequence[str], seed: int = 0) -> MedFusionModel:
    """A copy of ``model`` whose ``modules`` are re-initialised (``reset_parameters``), seeded, eval mode."""
    twin = copy.deepcopy(model).eval()
    named = dict(twin.named_modules())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in modules:
            for sub in named[name].modules():
                reset = getattr(sub, "reset_parameters", None) or getattr(sub, "_reset_parameters", None)
                if callable(reset):  # Linear, Conv, norms; MultiheadAttention's private one
                    reset()
                else:  # bare parameters (ParameterDict entries: learnt missing-modality tokens)
                    for p in sub.parameters(recurse=False):
                        nn.init.normal_(p, std=0.02)
    return twin


@dataclass(frozen=True)
class RandomisationRow:
    """One method at one cascade step.

    Attributes:
        method: Image heatmap method.
        step: Cascade step (``head``, ``+fusion``, ``+layer4``, ...).
        n: Maps compared (study x label pairs with a non-constant trained map).
        spearman: Mean rank correlation with the trained model's maps.
        ssim: Mean SSIM with the trained model's maps.
    """

    method: str
    step: str
    n: int
    spearman: float
    ssim: float


def randomisation_check(
    predictor: Predictor,
    studies: Sequence[StudyInput],
    *,
    methods: Sequence[str] = IMAGE_METHODS,
    labels: Sequence[str] | None = None,
    seed: int = 0,
) -> list[RandomisationRow]:
    """Compare each method's maps on the trained model with those on cascading randomised copies.

    Args:
        predictor: The trained model.
        studies: Studies with an image.
        methods: Image methods (those that do not apply are absent from the rows).
        labels: Labels compared (default: all).
        seed: Seed of the re-initialisation.

    Returns:
        One row per (method, step) with at least one comparable map, in cascade order.
    """
    names = list(labels) if labels is not None else predictor.labels
    idx = [predictor.labels.index(n) for n in names]
    trained = [explain_study(predictor, s, methods, labels=names).heatmaps for s in studies]
    rows = []
    for step, modules in cascade(predictor.loaded.model):
        loaded = dataclasses.replace(predictor.loaded, model=randomised(predictor.loaded.model, modules, seed))
        twin = Predictor(loaded)
        rand = [explain_study(twin, s, methods, labels=names).heatmaps for s in studies]
        for method in methods:
            pairs = [
                (t[method][i], r[method][i])
                for t, r in zip(trained, rand, strict=True)
                if method in t and method in r
                for i in idx
                if float(np.ptp(t[method][i])) > 0
            ]
            if pairs:
                rhos = [spearman(a, b) for a, b in pairs]
                rows.append(
                    RandomisationRow(
                        method,
                        step,
                        len(pairs),
                        float(np.nanmean([r if np.isfinite(r) else 0.0 for r in rhos])),
                        float(np.mean([ssim(a, b) for a, b in pairs])),
                    )
                )
    return rows


def randomisation_verdicts(rows: Sequence[RandomisationRow], cohort: str) -> dict[str, dict[str, Any]]:
    """Per method, the verdict record :mod:`medfusion.explain.checks` stores (fail: any step >= the cutoff)."""
    out: dict[str, dict[str, Any]] = {}
    for method in dict.fromkeys(r.method for r in rows):
        mine = [r for r in rows if r.method == method]
        worst = max(mine, key=lambda r: r.spearman)
        out[method] = {
            "check": "randomisation",
            "passed": worst.spearman < MAX_CORRELATION,
            "cohort": cohort,
            "detail": f"highest mean rank correlation {worst.spearman:.2f} (step {worst.step}, n={worst.n})",
        }
    return out


def format_randomisation_table(rows: Sequence[RandomisationRow]) -> str:
    """A Markdown table: one line per (method, step)."""
    verdicts = randomisation_verdicts(rows, "")
    lines = ["| method | randomised | n | Spearman rho | SSIM | verdict |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        verdict = "pass" if verdicts[r.method]["passed"] else "FAIL"
        lines.append(f"| {r.method} | {r.step} | {r.n} | {r.spearman:.3f} | {r.ssim:.3f} | {verdict} |")
    return "\n".join(lines)
