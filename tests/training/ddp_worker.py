"""A training process of the distributed tests, run alone or under torchrun.

``python -m tests.training.ddp_worker PROJECT OUT [--lr LR] [--resume] [--sleep S]`` trains one process;
``python -m torch.distributed.run --standalone --nproc-per-node 2 -m tests.training.ddp_worker …`` trains
two (gloo). Rank 0 writes ``OUT/result.json`` (history, best epoch, metrics, test probabilities).

The configuration has no random dropout inside the model (``image_only`` fusion, ``fusion.dropout`` 0):
what remains random (shuffling, augmentation) is drawn the same way by one and by two processes, so
their results can be compared number for number.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from tests.support.demo import small_demo_config
from tests.training.resume_worker import _finite, _Sleep

EPOCHS = 3


def config_for(project: Path, lr: float = 3e-3):
    """The configuration every process of the tests uses: 48 studies, 32 px, ResNet-18, global batch 8."""
    return small_demo_config(
        project,
        data__demo={"n_studies": 48, "image_size": 32, "broken_files": 0},
        fusion__name="image_only",
        fusion__dropout=0.0,
        training__epochs=EPOCHS,
        training__early_stopping_patience=EPOCHS,
        training__batch_size=8,
        training__lr=lr,
    )


def main() -> None:
    from medfusion.training.run import train_from_config

    parser = argparse.ArgumentParser()
    parser.add_argument("project", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = train_from_config(
        config_for(args.project, args.lr), out_dir=args.out, resume=args.resume, progress=False,
        callbacks=[_Sleep(args.sleep)] if args.sleep else None,
    )  # fmt: skip
    if os.environ.get("RANK", "0") != "0":
        return
    summary = {
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
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
