"""Train one model from a YAML config: ``python pipelines/train.py --config configs/demo.yaml``.

Thin wrapper over :func:`medfusion.training.run.train_from_config`; ``--set key.sub=value`` overrides
config keys (values parsed as YAML), e.g. ``--set fusion.name=late --set training.epochs=3``.
"""

from __future__ import annotations

import argparse
import logging
import sys

import yaml

from medfusion.errors import MedfusionError
from medfusion.training.run import train_from_config


def _overrides(items: list[str]) -> dict:
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        node = out
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml", help="YAML run configuration")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="override KEY=VALUE")
    parser.add_argument("--out", default=None, help="run folder (default: under project_dir/training)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = train_from_config(args.config, overrides=_overrides(args.overrides), out_dir=args.out)
    except MedfusionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    m = result.test_metrics
    print(f"model: {result.model_dir}")
    print(f"best epoch {result.best_epoch}; test macro AUROC {m.get('macro_auroc', float('nan')):.3f}, ECE {m.get('ece', float('nan')):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
