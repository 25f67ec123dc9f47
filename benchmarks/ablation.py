"""Modality ablation: every fusion strategy on the same data, seeds and budget.

    python benchmarks/ablation.py --config configs/demo.yaml --seeds 0 1 2

Trains ``image_only``, ``text_only``, ``late``, ``concat``, ``gated`` and ``hybrid`` (or ``--fusions``)
once per seed, each an MLflow run (tag ``purpose=ablation``, with the test predictions artifact) through
:func:`medfusion.workflow.train_and_register`, and prints test macro AUROC,
per-label AUROC, ECE and train seconds (mean +- std over seeds). The rows are also written to
``<out>/ablation.csv`` and ``<out>/ablation.json``. Report text can leak labels (Transchex's lesson):
publish this table with any multimodal figure.

The models are not registered unless ``--register`` is given: the registry holds candidates, not
experiments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from medfusion.training.run import resolve_config
from medfusion.workflow import train_and_register

FUSIONS = ["image_only", "text_only", "late", "concat", "gated", "hybrid"]


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Modality ablation of the fusion strategies.")
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--fusions", nargs="+", default=FUSIONS, choices=FUSIONS)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    parser.add_argument("--out", type=Path, default=None, help="default: <project_dir>/ablation")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: training.threads, 1)")
    parser.add_argument(
        "--register", action="store_true", help="register each model (a new version, @challenger); default: log only"
    )
    args = parser.parse_args(argv)
    if args.threads:
        args.overrides.append(f"training.threads={args.threads}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    base = resolve_config(args.config, _overrides(args.overrides))
    out = args.out or base.project_dir / "ablation"
    rows = []
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
            rows.append(row)
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
    header = "| fusion | macro AUROC | " + " | ".join(short.values()) + " | ECE | train s | s/epoch |"
    print(f"\nTest set, {len(args.seeds)} seed(s) {args.seeds} (mean±std); config {args.config}\n")
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
        ]
        print(f"| {fusion} | " + " | ".join(cells) + " |")
    print(f"\nrows: {out / 'ablation.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
