"""Faithfulness of the explanations: pointing game, top-k token hits, deletion curves, randomisation.

    python benchmarks/faithfulness.py --config demo --threads 1
    python benchmarks/faithfulness.py --config demo --model-dir runs/demo/training/<run>/model --record
    python benchmarks/faithfulness.py --model-dir runs/openi_text/tiny-kept/model \
        --manifest runs/openi_text/manifest_kept.parquet --checks aopc --max-studies 200 --record

Trains the config's model (or takes ``--model-dir``) and runs the ``--checks`` on the ``--split``:

* ``hits`` (demo cohort only: masks and evidence spans): pointing game and top-k token hit rate
  against exact random baselines (:mod:`medfusion.explain.faithfulness`);
* ``aopc``: deletion curves of the word evidence against random and frequency-matched words
  (:mod:`medfusion.explain.aopc`); any manifest with reports (``--manifest``: e.g. OpenI);
* ``randomisation``: the image maps against cascading randomised copies of the model
  (:mod:`medfusion.explain.randomisation`); studies with images.

``--max-studies`` caps the studies of ``aopc`` and ``randomisation`` (the first ones of the split).
Tables go to ``<out>/faithfulness.md`` and rows to ``<out>/faithfulness.json``; ``--record`` writes
the per-method verdicts into the model folder (``explanation_checks.json``, read by the review app).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

CHECKS = ("hits", "aopc", "randomisation")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Pointing game and top-k token hit rate on the demo cohort.")
    parser.add_argument("--config", default="demo")
    parser.add_argument("--model-dir", type=Path, default=None, help="a trained model folder (default: train one)")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--k", type=int, nargs="+", default=[1, 5], help="tokens per study for the top-k hit rate")
    parser.add_argument("--out", type=Path, default=None, help="default: <project_dir>/faithfulness")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument(
        "--checks", nargs="+", default=list(CHECKS), choices=CHECKS, help="which measurements to run (default: all)"
    )
    parser.add_argument("--manifest", type=Path, default=None, help="another cohort's manifest (aopc only)")
    parser.add_argument("--max-studies", type=int, default=0, help="cap on studies for aopc/randomisation (0: all)")
    parser.add_argument("--max-k", type=int, default=10, help="longest deletion curve (words)")
    parser.add_argument("--record", action="store_true", help="write the verdicts into the model folder")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from medfusion.explain.aopc import aopc_verdicts, evaluate_aopc, format_aopc_table
    from medfusion.explain.checks import record_checks
    from medfusion.explain.faithfulness import evaluate, format_table, load_evidence
    from medfusion.explain.randomisation import (
        format_randomisation_table,
        randomisation_check,
        randomisation_verdicts,
    )
    from medfusion.inference import Predictor, StudyInput
    from medfusion.ingest.manifest import read_manifest, rows_to_records
    from medfusion.training.run import demo_manifest, resolve_config, train_from_config

    config = resolve_config(args.config)
    if args.manifest is not None and (args.model_dir is None or set(args.checks) != {"aopc"}):
        print("--manifest needs --model-dir and --checks aopc", file=sys.stderr)
        return 2
    if config.data.manifest is not None and args.manifest is None:
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
    manifest = args.manifest or demo_manifest(config, progress=False)
    predictor = Predictor.from_dir(model_dir, device="cpu" if not torch.cuda.is_available() else "auto")
    df = read_manifest(manifest, predictor.labels)
    records = rows_to_records(df[df["split"] == args.split], predictor.labels)
    capped = records[: args.max_studies] if args.max_studies else records
    studies = [StudyInput(image_paths=r["image"], report_text=r["report"]) for r in capped]
    cohort = f"{'demo' if args.manifest is None else manifest.parent.name} {args.split} split"
    print(f"\nmodel {predictor.loaded.model_id}, {cohort} ({len(records)} studies)")
    tables, payload = [], {"model_dir": str(model_dir), "model_id": predictor.loaded.model_id, "split": args.split}
    verdicts: dict[str, dict] = {}
    if "hits" in args.checks:
        t0 = time.perf_counter()
        rows = evaluate(predictor, records, load_evidence(manifest.parent), ks=args.k, progress=True)
        tables.append(f"pointing game and top-k token hits ({len(records)} studies, {time.perf_counter() - t0:.0f} s)")
        tables.append(format_table(rows))
        payload["hits"] = {"k": args.k, "rows": [asdict(r) | {"lift": r.lift} for r in rows]}
    if "aopc" in args.checks:
        t0 = time.perf_counter()
        aopc_rows, curves = evaluate_aopc(predictor, studies, max_k=args.max_k, progress=True)
        tables.append(
            f"deletion curves, K <= {args.max_k} ({len(studies)} studies, {len(curves)} positive calls, "
            f"{time.perf_counter() - t0:.0f} s)"
        )
        tables.append(format_aopc_table(aopc_rows))
        payload["aopc"] = [asdict(r) | {"passed": r.passed} for r in aopc_rows]
        verdicts |= aopc_verdicts(aopc_rows, cohort)
    if "randomisation" in args.checks:
        t0 = time.perf_counter()
        with_image = [s for s in studies if s.image_paths]
        rand_rows = randomisation_check(predictor, with_image)
        tables.append(f"model-parameter randomisation ({len(with_image)} studies, {time.perf_counter() - t0:.0f} s)")
        tables.append(format_randomisation_table(rand_rows))
        payload["randomisation"] = [asdict(r) for r in rand_rows]
        verdicts |= randomisation_verdicts(rand_rows, cohort)
    text = "\n\n".join(tables)
    print("\n" + text)
    out = args.out or config.project_dir / "faithfulness"
    out.mkdir(parents=True, exist_ok=True)
    (out / "faithfulness.json").write_text(json.dumps(payload | {"verdicts": verdicts}, indent=1), encoding="utf-8")
    (out / "faithfulness.md").write_text(text + "\n", encoding="utf-8")
    print(f"\nwritten to {out}")
    if args.record and verdicts:
        print(f"verdicts recorded in {record_checks(model_dir, predictor.loaded.model_id, verdicts)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
