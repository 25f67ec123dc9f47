"""End-to-end demo pipeline: ``python pipelines/demo.py [--config configs/demo.yaml]``.

Thin wrapper over :func:`medfusion.workflow.run_demo` (same as ``medfusion demo``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medfusion.config import load_config
from medfusion.workflow import run_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    args = parser.parse_args()
    promoted, text = run_demo(load_config(args.config))
    print(text)
    raise SystemExit(0 if promoted else 3)


if __name__ == "__main__":
    main()
