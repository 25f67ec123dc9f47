"""Registry promotion by aliases (``challenger`` -> ``champion``) behind evaluation gates.

Both models are loaded as pyfuncs from the registry and scored on the same frozen evaluation set
(``<project_dir>/eval_set.parquet``, written once from the manifest's test split and never rewritten).
The decision and all its evidence are logged as an MLflow run in ``<experiment>-promotions``.

With ``promotion.require_ci_gain`` the challenger must also be *measurably* better: the lower bound of
the 95 % interval of its macro AUROC gain over the champion (a paired, patient-level bootstrap on the
studies of the frozen set that both scored, :func:`medfusion.metrics.paired_bootstrap_difference`) must
be above 0. The gain and its interval are logged either way (``gain_macro_auroc``, ``gain_ci_low``,
``gain_ci_high``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medfusion.config import Config, PromotionGates
from medfusion.errors import MedfusionError
from medfusion.ingest.manifest import manifest_hash, read_manifest
from medfusion.ingest.records import LABEL_PREFIX
from medfusion.metrics import compute_metrics, paired_bootstrap_difference
from medfusion.tracking.store import connect

log = logging.getLogger(__name__)

CHALLENGER = "challenger"
CHAMPION = "champion"
LATENCY_SAMPLE = 8


@dataclass
class ModelEvaluation:
    """Scores of one registered version on the frozen evaluation set."""

    version: str
    macro_auroc: float
    ece: float
    label_auroc: dict[str, float]
    latency_p95_ms: float
    probabilities: np.ndarray | None = field(default=None, repr=False)  # (N, L), NaN rows: not scored

    def summary_dict(self) -> dict[str, Any]:
        """The scores, without the per-study probabilities (for the evidence JSON)."""
        return {k: v for k, v in self.__dict__.items() if k != "probabilities"}


@dataclass(frozen=True)
class Gain:
    """Challenger minus champion macro AUROC on the studies both scored, with its 95 % bootstrap interval."""

    macro_auroc: float
    ci_low: float
    ci_high: float
    studies: int


@dataclass
class PromotionDecision:
    """Outcome of a promotion attempt, with its evidence."""

    promoted: bool
    challenger: ModelEvaluation
    champion: ModelEvaluation | None
    failures: list[str] = field(default_factory=list)
    run_id: str = ""
    gain: Gain | None = None

    def summary(self) -> str:
        """Human-readable verdict."""
        c = self.challenger
        head = (
            f"challenger v{c.version}: macro AUROC {c.macro_auroc:.3f}, ECE {c.ece:.3f}, "
            f"p95 latency {c.latency_p95_ms:.0f} ms"
        )
        if self.champion is not None:
            head += (
                f"\nchampion   v{self.champion.version}: "
                f"macro AUROC {self.champion.macro_auroc:.3f}, ECE {self.champion.ece:.3f}"
            )
        if self.gain is not None:
            g = self.gain
            head += f"\ngain       {g.macro_auroc:+.3f} macro AUROC [95 % CI {g.ci_low:+.3f}, {g.ci_high:+.3f}]"
        if self.promoted:
            return f"{head}\nPROMOTED: v{c.version} is now @champion (evidence: MLflow run {self.run_id})"
        return f"{head}\nREJECTED: " + "; ".join(self.failures) + f" (evidence: MLflow run {self.run_id})"


def frozen_eval_set(config: Config, manifest_path: Path) -> pd.DataFrame:
    """Return the frozen evaluation set, creating it from the manifest's test split the first time.

    Args:
        config: Run configuration (``project_dir`` holds the frozen set).
        manifest_path: Manifest whose ``test`` split seeds the set.
    """
    path = config.project_dir / "eval_set.parquet"
    if path.exists():
        return read_manifest(path, config.labels)
    manifest = read_manifest(manifest_path, config.labels)
    eval_set = manifest[manifest["split"] == "test"].reset_index(drop=True)
    if eval_set.empty:
        raise MedfusionError(f"{manifest_path}: manifest has no 'test' split to freeze an evaluation set from")
    from medfusion.ingest.manifest import write_manifest

    write_manifest(eval_set, path)
    log.info("froze evaluation set: %d studies -> %s", len(eval_set), path)
    return eval_set


def evaluate_version(model_uri: str, version: str, eval_set: pd.DataFrame, labels: list[str]) -> ModelEvaluation:
    """Score a registered model on the evaluation set and time single-study predictions.

    Args:
        model_uri: e.g. ``models:/medfusion/3``.
        version: Registry version (for the record).
        eval_set: Manifest rows with ``image_paths``, ``report_text`` and ``y_<label>``.
        labels: Label names, in the order of the model's outputs.
    """
    import mlflow

    model = mlflow.pyfunc.load_model(model_uri)
    inputs = eval_set[["image_paths", "report_text"]].copy()
    inputs["image_paths"] = inputs["image_paths"].map(list)
    scored = model.predict(inputs)
    failed = scored["error"].astype(bool)
    if failed.any():
        log.warning("%d evaluation studies could not be scored by v%s", int(failed.sum()), version)
    every = np.array(scored[[f"prob_{n}" for n in labels]], dtype=np.float64)  # (N, L), a writable copy
    every[failed.to_numpy()] = np.nan
    probs = every[~failed.to_numpy()]
    targets = eval_set.loc[~failed.to_numpy(), [f"{LABEL_PREFIX}{n}" for n in labels]].to_numpy(dtype=np.float64)
    metrics = compute_metrics(probs, targets, labels)
    timings = []
    for i in range(min(LATENCY_SAMPLE, len(inputs))):
        start = time.perf_counter()
        model.predict(inputs.iloc[[i]])
        timings.append((time.perf_counter() - start) * 1000)
    return ModelEvaluation(
        version=str(version),
        macro_auroc=float(metrics["macro_auroc"]),
        ece=float(metrics["ece"]),
        label_auroc={n: float(metrics[f"auroc_{n}"]) for n in labels if f"auroc_{n}" in metrics},
        latency_p95_ms=float(np.percentile(timings, 95)),
        probabilities=every,
    )


def gain_over_champion(
    challenger: ModelEvaluation,
    champion: ModelEvaluation,
    eval_set: pd.DataFrame,
    labels: list[str],
    *,
    n_boot: int = 1000,
) -> Gain | None:
    """Paired macro AUROC gain of the challenger over the champion, on the studies both scored.

    Args:
        challenger: Its evaluation, with ``probabilities`` (N, L) over ``eval_set``.
        champion: The same for the champion.
        eval_set: The frozen set (``patient_pseudonym``: the resampling unit; ``y_<label>``).
        labels: Label names.
        n_boot: Bootstrap resamples.

    Returns:
        The :class:`Gain`; None without probabilities (nothing to pair).
    """
    a, b = challenger.probabilities, champion.probabilities
    if a is None or b is None:
        return None
    both = ~(np.isnan(a).any(1) | np.isnan(b).any(1))
    targets = eval_set[[f"{LABEL_PREFIX}{n}" for n in labels]].to_numpy(dtype=np.float64)[both]
    groups = eval_set["patient_pseudonym"].astype(str).to_numpy()[both]
    gain, low, high = paired_bootstrap_difference(a[both], b[both], targets, labels, groups, n_boot=n_boot)
    return Gain(macro_auroc=gain, ci_low=low, ci_high=high, studies=int(both.sum()))


def check_gates(
    challenger: ModelEvaluation,
    champion: ModelEvaluation | None,
    gates: PromotionGates,
    gain: Gain | None = None,
    *,
    approved_by: str | None = None,
) -> list[str]:
    """Return the failed gates as reasons (empty list: every gate passes).

    Args:
        challenger: The challenger's evaluation.
        champion: The champion's, or None when there is none yet.
        gates: The bounds; with ``require_approval`` a named approver is a gate too.
        gain: :func:`gain_over_champion`, needed by ``gates.require_ci_gain`` when there is a champion
            (without it that gate fails).
        approved_by: Who approved the promotion (None: nobody).
    """
    failures = []
    if gates.require_approval and not (approved_by or "").strip():
        failures.append("approval required (promotion.require_approval) and none given: --approved-by NAME")
    if challenger.ece > gates.max_ece:
        failures.append(f"ECE {challenger.ece:.3f} > bound {gates.max_ece}")
    if challenger.latency_p95_ms > gates.max_latency_ms:
        failures.append(f"p95 latency {challenger.latency_p95_ms:.0f} ms > bound {gates.max_latency_ms:.0f} ms")
    if champion is None:
        if not challenger.macro_auroc > 0.5:
            failures.append(f"macro AUROC {challenger.macro_auroc:.3f} is not above chance")
        return failures
    floor = champion.macro_auroc - gates.auroc_margin
    if challenger.macro_auroc < floor:
        failures.append(
            f"macro AUROC {challenger.macro_auroc:.3f} < champion {champion.macro_auroc:.3f} "
            f"- margin {gates.auroc_margin}"
        )
    for name, auroc in champion.label_auroc.items():
        drop = auroc - challenger.label_auroc.get(name, 0.0)
        if drop > gates.max_label_auroc_drop:
            failures.append(f"{name} AUROC drops {drop:.3f} > bound {gates.max_label_auroc_drop}")
    if gates.require_ci_gain:
        if gain is None:
            failures.append("no paired evaluation to bound the gain over the champion")
        elif not gain.ci_low > 0:
            failures.append(
                f"macro AUROC gain {gain.macro_auroc:+.3f} over champion: 95 % CI lower bound "
                f"{gain.ci_low:+.3f} is not above 0"
            )
    return failures


def promote_challenger(
    config: Config,
    *,
    version: str | None = None,
    manifest_path: Path | None = None,
    approved_by: str | None = None,
) -> PromotionDecision:
    """Evaluate the challenger (or ``version``) against the champion; move ``@champion`` if gates pass.

    The evidence run (``<experiment>-promotions``) records the frozen evaluation set as a digest-only
    MLflow dataset (``evaluation``), both evaluations, every gate and its outcome (``gates.json``), the
    challenger's LoggedModel id and the approver (tag ``approved_by``). The version gets tags
    ``promoted_by_run`` / ``rejected_by_run`` and, when approved, ``approved_by``.

    Args:
        config: Run configuration (registry name, gates, project_dir).
        version: Registered version to evaluate; default the ``@challenger`` alias.
        manifest_path: Manifest to freeze the evaluation set from, if it is not frozen yet
            (default: the run's, :func:`default_manifest_path`).
        approved_by: Name of the person who approved the promotion (required when
            ``promotion.require_approval`` is set).

    Raises:
        MedfusionError: No challenger, or no evaluation set can be built.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    name = config.tracking.registered_model
    client = connect(config, experiment=f"{config.tracking.experiment}-promotions")
    try:
        challenger_mv = (
            client.get_model_version(name, version) if version else client.get_model_version_by_alias(name, CHALLENGER)
        )
    except MlflowException:
        raise MedfusionError(
            f"registered model {name!r} has no {'version ' + version if version else '@challenger'}"
        ) from None
    try:
        champion_mv = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion_mv = None
    if champion_mv is not None and champion_mv.version == challenger_mv.version:
        raise MedfusionError(f"v{challenger_mv.version} of {name!r} is already @champion")

    eval_set = frozen_eval_set(config, manifest_path or default_manifest_path(config))
    challenger = evaluate_version(
        f"models:/{name}/{challenger_mv.version}", challenger_mv.version, eval_set, config.labels
    )
    champion = (
        evaluate_version(f"models:/{name}/{champion_mv.version}", champion_mv.version, eval_set, config.labels)
        if champion_mv is not None
        else None
    )
    approver = (approved_by or "").strip() or None
    gain = (
        gain_over_champion(challenger, champion, eval_set, config.labels, n_boot=config.promotion.ci_resamples)
        if champion is not None
        else None
    )
    failures = check_gates(challenger, champion, config.promotion, gain, approved_by=approver)
    promoted = not failures
    from medfusion.tracking.datasets import EVALUATION_SET, log_manifest_input

    with mlflow.start_run(run_name=f"promote-v{challenger.version}") as run:
        log_manifest_input(eval_set, config.labels, name=EVALUATION_SET, context="evaluation")
        mlflow.log_params(
            {
                "registered_model": name,
                "challenger_version": challenger.version,
                "champion_version": champion.version if champion else "none",
                "eval_set_hash": manifest_hash(eval_set),
                "eval_set_size": len(eval_set),
                **{f"gate_{k}": v for k, v in config.promotion.model_dump().items()},
            }
        )
        for role, ev in (("challenger", challenger), ("champion", champion)):
            if ev is not None:
                mlflow.log_metrics(
                    {
                        f"{role}_macro_auroc": ev.macro_auroc,
                        f"{role}_ece": ev.ece,
                        f"{role}_latency_p95_ms": ev.latency_p95_ms,
                        **{f"{role}_auroc_{k}": v for k, v in ev.label_auroc.items()},
                    }
                )
        if gain is not None and np.isfinite(gain.ci_low):
            mlflow.log_metrics(
                {"gain_macro_auroc": gain.macro_auroc, "gain_ci_low": gain.ci_low, "gain_ci_high": gain.ci_high}
            )
        mlflow.set_tags(
            {
                "decision": "promoted" if promoted else "rejected",
                "failures": "; ".join(failures)[:4000],
                "challenger_model_id": challenger_mv.tags.get("logged_model_id") or "",
                "approved_by": approver or "",
            }
        )
        mlflow.log_dict(_evidence(challenger, champion, failures, gain), "promotion_evidence.json")
        mlflow.log_dict(gate_report(challenger, champion, config.promotion, approver, gain), "gates.json")
        run_id = run.info.run_id
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, challenger.version)
        client.set_model_version_tag(name, challenger.version, "promoted_by_run", run_id)
        if approver:
            client.set_model_version_tag(name, challenger.version, "approved_by", approver)
        log.info("v%s of %s promoted to @champion", challenger.version, name)
    else:
        client.set_model_version_tag(name, challenger.version, "rejected_by_run", run_id)
    return PromotionDecision(promoted, challenger, champion, failures, run_id, gain)


def _evidence(
    challenger: ModelEvaluation, champion: ModelEvaluation | None, failures: list[str], gain: Gain | None = None
) -> dict[str, Any]:
    return {
        "challenger": challenger.summary_dict(),
        "champion": champion.summary_dict() if champion else None,
        "gain": gain.__dict__ if gain else None,
        "failures": failures,
        "promoted": not failures,
    }


def gate_report(
    challenger: ModelEvaluation,
    champion: ModelEvaluation | None,
    gates: PromotionGates,
    approved_by: str | None,
    gain: Gain | None = None,
) -> dict[str, Any]:
    """Every gate's bound, the challenger's value and whether it passed (``gates.json`` of the evidence run)."""
    report: dict[str, Any] = {
        "max_ece": {"bound": gates.max_ece, "value": challenger.ece, "passed": challenger.ece <= gates.max_ece},
        "max_latency_ms": {
            "bound": gates.max_latency_ms,
            "value": challenger.latency_p95_ms,
            "passed": challenger.latency_p95_ms <= gates.max_latency_ms,
        },
        "approval": {
            "required": gates.require_approval,
            "approved_by": approved_by,
            "passed": bool(approved_by) or not gates.require_approval,
        },
    }
    if champion is None:
        report["above_chance"] = {"bound": 0.5, "value": challenger.macro_auroc, "passed": challenger.macro_auroc > 0.5}
    else:
        floor = champion.macro_auroc - gates.auroc_margin
        report["auroc_margin"] = {
            "bound": floor,
            "value": challenger.macro_auroc,
            "passed": challenger.macro_auroc >= floor,
        }
        if gates.require_ci_gain:
            low = None if gain is None else gain.ci_low
            report["ci_gain"] = {"bound": 0.0, "value": low, "passed": low is not None and low > 0}
    return report


def default_manifest_path(config: Config) -> Path:
    """The run's manifest (:func:`medfusion.training.run.training_manifest`)."""
    from medfusion.training.run import training_manifest

    return training_manifest(config)
