"""Faithfulness of the explanations on the demo cohort: pointing game and top-k token hit rate.

    python benchmarks/faithfulness.py --config demo --threads 1
    python benchmarks/faithfulness.py --config demo --model-dir runs/demo/training/<run>/model

Trains the config's model (or takes ``--model-dir``), explains every study of the ``--split`` whose
label is positive, and prints, per method and label, the hit rate and its exact random baseline (see
:mod:`medfusion.explain.faithfulness`). The rows are also written to ``<out>/faithfulness.json``
and ``<out>/faithfulness.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Pointing game and top-k token hit rate on the demo cohort.")
    parser.add_argument("--config", default="demo")
    parser.add_argument("--model-dir", type=Path, default=None, help="a trained model folder (default: train one)")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--k", type=int, nargs="+", default=[1, 5], help="tokens per study for the top-k hit rate")
    parser.add_argument("--out", type=Path, default=None, help="default: <project_dir>/faithfulness")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from medfusion.explain.faithfulness import evaluate, format_table, load_evidence
    from medfusion.inference import Predictor
    from medfusion.ingest.manifest import read_manifest, rows_to_records
    from medfusion.training.run import demo_manifest, resolve_config, train_from_config

    config = resolve_config(args.config)
    if config.data.manifest is not None:
        print(
            "faithfulness needs the demo cohort (masks, evidence spans); the config names another manifest",
            file=sys.stderr,
        )
        return 2
    started = time.perf_counter()
    model_dir = args.model_dir
    if model_dir is None:
        result = train_from_config(config)
        model_dir = Path(result.model_dir)
        print(
            f"trained {model_dir} in {time.perf_counter() - started:.0f} s; "
            f"test macro AUROC {result.test_metrics['macro_auroc']:.3f}"
        )
    manifest = demo_manifest(config, progress=False)
    predictor = Predictor.from_dir(model_dir, device="cpu" if not torch.cuda.is_available() else "auto")
    df = read_manifest(manifest, predictor.labels)
    records = rows_to_records(df[df["split"] == args.split], predictor.labels)
    t0 = time.perf_counter()
    rows = evaluate(predictor, records, load_evidence(manifest.parent), ks=args.k, progress=True)
    seconds = time.perf_counter() - t0
    table = format_table(rows)
    print(
        f"\nmodel {predictor.loaded.model_id} ({config.fusion.name}, {config.image_encoder.name}, "
        f"{'x'.join(map(str, config.data.image_size))}), {args.split} split ({len(records)} studies), {seconds:.0f} s\n"
    )
    print(table)
    out = args.out or config.project_dir / "faithfulness"
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "model_dir": str(model_dir),
        "model_id": predictor.loaded.model_id,
        "split": args.split,
        "k": args.k,
        "rows": [asdict(r) | {"lift": r.lift} for r in rows],
    }
    (out / "faithfulness.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
    (out / "faithfulness.md").write_text(table + "\n", encoding="utf-8")
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
