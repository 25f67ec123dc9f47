"""A training process for the resume test: ``python -m tests.training.resume_worker PROJECT OUT [--resume]``.

Trains the small demo configuration (48 studies, 32 px, 4 epochs) into ``OUT`` and writes
``OUT/result.json`` (history, best epoch, metrics, test probabilities). ``--sleep S`` waits S seconds
at the end of each epoch (before its checkpoint), so the test can kill it mid-run.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from tests.support.demo import small_demo_config

EPOCHS = 4


def config_for(project: Path):
    """The configuration every process of the test uses (same fingerprint, same cohort)."""
    return small_demo_config(
        project,
        data__demo={"n_studies": 48, "image_size": 32, "broken_files": 0},
        training__epochs=EPOCHS,
        training__early_stopping_patience=EPOCHS,
    )


class _Sleep:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        time.sleep(self.seconds)


def _finite(values: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def main() -> None:
    from medfusion.training.run import train_from_config

    parser = argparse.ArgumentParser()
    parser.add_argument("project", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = train_from_config(
        config_for(args.project), out_dir=args.out, resume=args.resume, progress=False,
        callbacks=[_Sleep(args.sleep)] if args.sleep else None,
    )  # fmt: skip
    summary = {
        "history": [_finite({k: v for k, v in row.items() if k != "epoch_seconds"}) for row in result.history],
        "best_epoch": result.best_epoch,
        "val_metrics": _finite(result.val_metrics),
        "test_metrics": _finite(result.test_metrics),
        "calibration": result.calibration.model_dump(mode="json"),
        "test_probabilities": result.test_probabilities.tolist(),
    }
    (args.out / "result.json").write_text(json.dumps(summary), encoding="utf-8")


if __name__ == "__main__":
    main()
