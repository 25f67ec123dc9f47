"""Modality ablation: every fusion strategy on the same data, seeds and budget.

    python benchmarks/ablation.py --config demo --seeds 0 1 2
    python benchmarks/ablation.py --cohorts image_noise text_noise partial_image small_imbalanced

``--cohorts`` picks demo cohorts built to break fusion (:data:`COHORTS`, knobs of
:class:`~medfusion.config.DemoCohortConfig`); each gets its own ``<out>/<cohort>/`` folder and table.
Besides mean +- sd over seeds, each fusion gets the paired difference fused - best single modality
(the single-modality model with the higher mean test macro AUROC) on the same test studies: macro AUROC
averaged over seeds, with a 95 % patient-level bootstrap interval (the same resamples for both models,
:func:`medfusion.metrics.bootstrap_weights`), and the test macro AUROC of the fusion head alone, without
the stacking fallback (``fused head``).

Trains ``image_only``, ``text_only``, ``late``, ``concat``, ``gated`` and ``hybrid`` (or ``--fusions``)
once per seed, each an MLflow run (tag ``purpose=ablation``, with the test predictions artifact) through
:func:`medfusion.workflow.train_and_register`, and prints test macro AUROC,
per-label AUROC, ECE and train seconds (mean +- std over seeds). The rows are also written to
``<out>/ablation.csv`` and ``<out>/ablation.json``. Report text can leak labels (Transchex's lesson):
publish this table with any multimodal figure.

Leakage probe (with ``text_only`` among the fusions): per label, the test AUROC of the label's own
words alone (a logistic regression on their counts) and of each seed's text model on the plain and on
label-scrubbed test reports (:mod:`medfusion.leakage`), so a reader sees how much of a text AUROC is
the report naming its label. ``--leakage-only`` prints it again from a finished run's
``<out>/ablation.json`` (its models under ``<project_dir>/training/<run id>/model``) without training.

The models are not registered unless ``--register`` is given: the registry holds candidates, not
experiments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from medfusion.training.run import resolve_config
from medfusion.workflow import train_and_register

FUSIONS = ["image_only", "text_only", "late", "concat", "gated", "hybrid"]
SINGLES = ("image_only", "text_only")
#: Demo cohorts built to break fusion: name -> data.demo overrides.
COHORTS: dict[str, dict] = {
    "default": {},
    "image_noise": {"image_signal": 0.0},  # the image is pure noise for every label
    "text_noise": {"text_signal": 0.0},  # the report is pure noise for every label
    "partial_image": {"image_findings": ["nodule"]},  # the image informs one label only
    "small_imbalanced": {"n_studies": 300, "prevalence": 0.1},  # a site pilot: 300 studies, 10 % positives
}


def _overrides(items: list[str]) -> dict:
    import yaml

    out: dict = {}
    for item in items:
        key, _, value = item.partition("=")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return out


def _fmt(values: list[float]) -> str:
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f}±{np.std(values):.3f}"


def paired_difference(
    fused: list[np.ndarray],
    single: list[np.ndarray],
    targets: np.ndarray,
    labels: list[str],
    groups: list[str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Macro AUROC of ``fused`` minus ``single``, averaged over seeds, with a 95 % patient bootstrap interval.

    Args:
        fused: Per seed, (N, L) test probabilities of the fused model.
        single: Per seed (same order), (N, L) test probabilities of the single-modality model.
        targets: (N, L) test targets (the same studies for every seed).
        labels: L names.
        groups: (N,) patient of each test study.

    Returns:
        ``(difference, low, high)``.
    """
    from medfusion.metrics import bootstrap_metrics, bootstrap_weights, evaluate

    point = np.mean(
        [
            evaluate(f, targets, labels).metrics["macro_auroc"] - evaluate(s, targets, labels).metrics["macro_auroc"]
            for f, s in zip(fused, single, strict=True)
        ]
    )
    weights = bootstrap_weights(groups, n_boot, np.random.default_rng(seed))  # (B, N), shared by both models
    draws = np.mean(
        [
            bootstrap_metrics(f, targets, labels, weights)["macro_auroc"]
            - bootstrap_metrics(s, targets, labels, weights)["macro_auroc"]
            for f, s in zip(fused, single, strict=True)
        ],
        axis=0,
    )  # (B,)
    low, high = np.nanpercentile(draws, [2.5, 97.5])
    return float(point), float(low), float(high)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Modality ablation of the fusion strategies.")
    parser.add_argument("--config", default="demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--cohorts",
        nargs="+",
        default=None,
        choices=list(COHORTS),
        help="demo cohorts built to break fusion (data.source demo); default: the config's data as it is",
    )
    parser.add_argument("--fusions", nargs="+", default=FUSIONS, choices=FUSIONS)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    parser.add_argument("--out", type=Path, default=None, help="default: <project_dir>/ablation")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: training.threads, 1)")
    parser.add_argument(
        "--leakage-only",
        action="store_true",
        help="print the leakage probe of a finished run (<out>/ablation.json) without training",
    )
    parser.add_argument(
        "--register", action="store_true", help="register each model (a new version, @challenger); default: log only"
    )
    args = parser.parse_args(argv)
    if args.threads:
        args.overrides.append(f"training.threads={args.threads}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    base = resolve_config(args.config, _overrides(args.overrides))
    out = args.out or base.project_dir / "ablation"
    table = leakage_from_rows if args.leakage_only else run_table
    if args.cohorts is None:
        return table(args, base, out, "")
    for cohort in args.cohorts:
        demo = {**base.data.demo.model_dump(), **COHORTS[cohort]}
        overrides = {"project_dir": str(out / cohort), "data": {"source": "demo", "manifest": None, "demo": demo}}
        table(args, resolve_config(base, overrides), out / cohort, cohort)
    return 0


def leakage_probe(base: Any, model_dirs: list[Path]) -> list[dict[str, Any]]:
    """Per label: AUROC of the label words alone, and of the text models on plain and scrubbed test reports.

    Args:
        base: The configuration the text models were trained with (its data and labels).
        model_dirs: The ``text_only`` model folders, one per seed.

    Returns:
        One row per label: ``label``, ``label_words``, ``text_model`` and ``text_model_scrubbed`` (lists
        over seeds).
    """
    from medfusion.inference import Predictor
    from medfusion.leakage import label_word_auroc, scrub
    from medfusion.metrics import evaluate
    from medfusion.processing.sample import StudyInput
    from medfusion.training.run import load_records

    records = load_records(base, progress=False).records
    labels = list(base.labels)

    def reports(split: str) -> list[str]:
        return [r.get("report") or "" for r in records[split]]

    def targets(split: str) -> np.ndarray:
        return np.stack([np.asarray(r["label"], dtype=np.float64) for r in records[split]])

    words = label_word_auroc(reports("train"), targets("train"), reports("test"), targets("test"), labels)
    test = reports("test")
    plain: list[dict[str, float]] = []
    scrubbed: list[dict[str, float]] = []
    for model_dir in model_dirs:
        predictor = Predictor.from_dir(model_dir, device="cpu")
        for texts, into in ((test, plain), ([scrub(t, labels) for t in test], scrubbed)):
            preds = predictor.predict([StudyInput(report_text=t) for t in texts])
            probs = np.stack([p.probabilities for p in preds])  # (N, L)
            metrics = evaluate(probs, targets("test"), labels).metrics
            into.append({n: metrics.get(f"auroc_{n}", float("nan")) for n in labels})
    return [
        {
            "label": n,
            "label_words": words[n],
            "text_model": [p[n] for p in plain],
            "text_model_scrubbed": [p[n] for p in scrubbed],
        }
        for n in labels
    ]


def print_leakage(rows: list[dict[str, Any]], title: str) -> None:
    """The leakage table (markdown)."""
    print(f"\n{title}leakage probe, test set: AUROC per label (text model: mean±std over seeds)\n")
    print("| label | label words alone | text model | text model, label-scrubbed reports |")
    print("|---|---|---|---|")
    for r in rows:
        cells = [f"{r['label_words']:.3f}", _fmt(r["text_model"]), _fmt(r["text_model_scrubbed"])]
        print(f"| {r['label']} | " + " | ".join(cells) + " |")


def leakage_from_rows(args: argparse.Namespace, base: Any, out: Path, cohort: str) -> int:
    """``--leakage-only``: the probe over the ``text_only`` models of a finished ``<out>/ablation.json``."""
    rows = json.loads((out / "ablation.json").read_text())
    dirs = [base.project_dir / "training" / r["run_id"] / "model" for r in rows if r["fusion"] == "text_only"]
    if not dirs:
        print(f"{out / 'ablation.json'}: no text_only runs to probe")
        return 1
    probe = leakage_probe(base, dirs)
    (out / "leakage.json").write_text(json.dumps(probe, indent=1))
    print_leakage(probe, f"cohort {cohort}, " if cohort else "")
    return 0


def run_table(args: argparse.Namespace, base: Any, out: Path, cohort: str) -> int:
    """Train every fusion for every seed on ``base``'s data, print the table, write the rows to ``out``."""
    from medfusion.training.engine import patients
    from medfusion.training.run import load_records

    rows = []
    probs: dict[tuple[str, int], np.ndarray] = {}
    targets = np.zeros((0, len(base.labels)))
    for fusion in args.fusions:
        for seed in args.seeds:
            config = resolve_config(base, {"fusion": {"name": fusion}, "training": {"seed": seed}})
            outcome = train_and_register(config, register=args.register, tags={"purpose": "ablation"})
            result = outcome.result
            epochs = [h["epoch_seconds"] for h in result.history]
            row = {
                "fusion": fusion,
                "seed": seed,
                "run_id": outcome.run_id,
                "registered_version": outcome.version or "",
                "best_epoch": result.best_epoch,
                "epochs": len(result.history),
                "train_seconds": result.train_seconds,
                "seconds_per_epoch": float(np.mean(epochs)),
                "macro_auroc": result.test_metrics.get("macro_auroc", float("nan")),
                "ece": result.test_metrics.get("ece", float("nan")),
                **{f"auroc_{n}": result.test_metrics.get(f"auroc_{n}", float("nan")) for n in base.labels},
            }
            row["fused_head_auroc"] = result.candidate_test_auroc.get("fused", float("nan"))
            row["model_dir"] = str(result.model_dir)
            if result.stacking is not None:
                row["stacking"] = result.stacking.by_label(tuple(base.labels))
            rows.append(row)
            probs[fusion, seed] = result.test_probabilities
            targets = result.test_targets
            print(
                f"{fusion:<11} seed {seed}: macro AUROC {row['macro_auroc']:.3f}  ECE {row['ece']:.3f}  "
                f"{row['train_seconds']:.0f}s ({row['epochs']} epochs)",
                flush=True,
            )

    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps(rows, indent=1))
    import pandas as pd

    pd.DataFrame(rows).to_csv(out / "ablation.csv", index=False)
    short = {n: n[:8] for n in base.labels}
    header = (
        "| fusion | macro AUROC | "
        + " | ".join(short.values())
        + " | ECE | train s | s/epoch | fused head | fused - best single [CI] |"
    )
    groups = patients(load_records(base, progress=False).records["test"])
    singles = [f for f in SINGLES if f in args.fusions]
    best = max(singles, key=lambda f: np.mean([r["macro_auroc"] for r in rows if r["fusion"] == f]), default=None)
    diffs: dict[str, str] = {}
    for fusion in args.fusions:
        if best is None or fusion in SINGLES:
            continue
        d, low, high = paired_difference(
            [probs[fusion, s] for s in args.seeds], [probs[best, s] for s in args.seeds], targets, base.labels, groups
        )
        diffs[fusion] = f"{d:+.3f} [{low:+.3f}, {high:+.3f}]"
        for r in rows:
            if r["fusion"] == fusion:
                r.update({"diff_vs_best_single": d, "diff_ci_low": low, "diff_ci_high": high})
    (out / "ablation.json").write_text(json.dumps(rows, indent=1))
    title = f"cohort {cohort}, " if cohort else ""
    print(f"\n{title}test set, {len(args.seeds)} seed(s) {args.seeds} (mean±std); config {args.config}")
    print(f"fused - best single ({best}): macro AUROC averaged over seeds [95 % patient bootstrap CI]\n")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for fusion in args.fusions:
        rs = [r for r in rows if r["fusion"] == fusion]
        cells = [_fmt([r["macro_auroc"] for r in rs])]
        cells += [_fmt([r[f"auroc_{n}"] for r in rs]) for n in base.labels]
        cells += [
            _fmt([r["ece"] for r in rs]),
            f"{np.mean([r['train_seconds'] for r in rs]):.0f}",
            f"{np.mean([r['seconds_per_epoch'] for r in rs]):.1f}",
            _fmt([r["fused_head_auroc"] for r in rs]),
            diffs.get(fusion, ""),
        ]
        print(f"| {fusion} | " + " | ".join(cells) + " |")
    text_dirs = [Path(r["model_dir"]) for r in rows if r["fusion"] == "text_only"]
    if text_dirs:
        probe = leakage_probe(base, text_dirs)
        (out / "leakage.json").write_text(json.dumps(probe, indent=1))
        print_leakage(probe, title)
    print(f"\nrows: {out / 'ablation.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
