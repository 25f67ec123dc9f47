"""CPU training-data benchmark: decoded-image cache, loader vs model, one vs two processes.

    python benchmarks/train_data.py [--studies 48] [--image-size 512] [--input-size 64] [--epochs 2]
                                    [--workers 0] [--skip-ddp]

On a demo cohort re-encoded as lossless JPEG 2000 (pydicom + pylibjpeg-openjpeg), prints:

1. **Decoded cache**: the data time of epoch 1 (cold cache: decode every DICOM and write the cache) and
   of epoch 2 (warm: read the cache), over the train split with ``data.cache_dir``, and their ratio.
2. **Loader vs model**: training samples/s with the DataLoader in the loop (reading the cache, random
   augmentation, collation) and with the same batches already in memory (model only), and the ratio
   loader-included / model-only.
3. **One vs two processes**: samples/s of a whole ``train`` (epochs' wall time, from the run's history)
   with one process and with two gloo processes under torchrun (``--nproc-per-node 2``), same global batch.

Everything is synthetic (no patient data, no download). Keep it small on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _config(project: Path, args: argparse.Namespace, **extra: Any) -> Any:
    from medfusion.config import load_config

    overrides: dict[str, Any] = {
        "project_dir": str(project),
        "data": {
            "image_size": [args.input_size, args.input_size],
            "demo": {"n_studies": args.studies, "image_size": args.image_size, "broken_files": 0},
            "num_workers": args.workers,
            "cache_dir": str(project / "decoded-cache"),
        },
        "fusion": {"name": "image_only", "dropout": 0.0},
        "image_encoder": {"name": "resnet18"},
        "training": {"epochs": args.epochs, "early_stopping_patience": args.epochs, "batch_size": 8},
    }
    for key, value in extra.items():
        overrides.setdefault(key, {}).update(value)
    return load_config(ROOT / "medfusion" / "configs" / "demo.yaml", overrides)


def _reencode_j2k(cohort: Path) -> int:
    """Rewrite every DICOM under ``cohort`` as JPEG 2000 Lossless, in place; returns how many."""
    import pydicom
    from pydicom.uid import JPEG2000Lossless

    n = 0
    for path in sorted(cohort.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        if ds.file_meta.TransferSyntaxUID != JPEG2000Lossless:
            if ds.file_meta.TransferSyntaxUID.is_compressed:
                ds.decompress()
            ds.compress(JPEG2000Lossless, generate_instance_uid=False)
            ds.save_as(path)
        n += 1
    return n


def _train_split(config: Any) -> tuple[Any, list[dict]]:
    from medfusion.training.run import load_records

    return config, load_records(config, progress=False).records["train"]


def bench_cache_and_loader(project: Path, args: argparse.Namespace) -> dict[str, float]:
    """Sections 1 and 2 (one process)."""
    import torch

    from medfusion.models.card import ModelCard
    from medfusion.models.model import build_model
    from medfusion.training.engine import _loaders, masked_bce, param_groups
    from medfusion.training.text_setup import prepare_text_encoder

    torch.set_num_threads(1)
    config, train = _train_split(_config(project, args))
    card = ModelCard.from_config(config)
    text_dir, tokenizer = prepare_text_encoder(config, [], project / "bench-run")
    records = {"train": train}
    device = torch.device("cpu")

    start = time.perf_counter()  # epoch 1: building the dataset decodes and caches every study
    loaders, _, stats = _loaders(card, config, records, tokenizer, device)
    for _ in loaders["train"]:
        pass
    epoch1 = time.perf_counter() - start
    loaders["train"].batch_sampler.set_epoch(2)  # type: ignore[union-attr]
    start = time.perf_counter()
    for _ in loaders["train"]:
        pass
    epoch2 = time.perf_counter() - start
    start = time.perf_counter()  # a new run: the dataset finds every study in the cache
    loaders, _, warm = _loaders(card, config, records, tokenizer, device)
    rebuild = time.perf_counter() - start

    model = build_model(card, text_dir)
    model.train()
    optimizer = torch.optim.AdamW(param_groups(model, config))

    def step(batch: dict[str, torch.Tensor]) -> None:
        loss = masked_bce(model(batch).logits, batch["label"], None)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    batches = list(loaders["train"])
    step(batches[0])  # warm-up
    n = sum(len(b["label"]) for b in batches)
    start = time.perf_counter()
    for batch in loaders["train"]:
        step(batch)
    with_loader = n / (time.perf_counter() - start)
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    model_only = n / (time.perf_counter() - start)
    return {
        "train_studies": len(train),
        "cache_misses_epoch1": stats.misses,
        "cache_hits_new_run": warm.hits,
        "data_s_epoch1": epoch1,
        "data_s_epoch2": epoch2,
        "epoch1_over_epoch2": epoch1 / epoch2,
        "dataset_rebuild_s_warm_cache": rebuild,
        "samples_per_s_loader_included": with_loader,
        "samples_per_s_model_only": model_only,
        "loader_over_model": with_loader / model_only,
    }


def _worker(project: str, args_json: str, out: str) -> None:
    """One training process (alone or a torchrun rank): trains and, on rank 0, writes its samples/s."""
    import torch

    from medfusion.training.run import train_from_config

    torch.set_num_threads(1)
    args = argparse.Namespace(**json.loads(args_json))
    config = _config(Path(project), args, data={"cache_dir": None})
    run_dir = Path(out).with_suffix("")
    result = train_from_config(config, out_dir=run_dir, progress=False)
    if os.environ.get("RANK", "0") == "0":
        from medfusion.training.run import load_records

        n_train = len(load_records(config, progress=False).records["train"])
        seconds = sum(r["epoch_seconds"] for r in result.history)
        Path(out).write_text(json.dumps({"samples_per_s": n_train * len(result.history) / seconds}))


def bench_processes(project: Path, args: argparse.Namespace) -> dict[str, float]:
    """Section 3: a whole training run with one and with two gloo processes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out: dict[str, float] = {}
    for nproc in (1, 2):
        target = project / f"procs-{nproc}.json"
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"] if nproc > 1 else []
        worker = ["-m", "benchmarks.train_data", "--worker", str(project), json.dumps(vars(args)), str(target)]
        cmd = [sys.executable, *launcher, *worker]
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, timeout=1800)
        out[f"samples_per_s_{nproc}_process"] = json.loads(target.read_text())["samples_per_s"]
    out["two_over_one"] = out["samples_per_s_2_process"] / out["samples_per_s_1_process"]
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":  # a torchrun rank
        _worker(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=48)
    parser.add_argument("--image-size", type=int, default=512, help="Stored DICOM size (decode cost).")
    parser.add_argument("--input-size", type=int, default=64, help="Model input size.")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="data.num_workers")
    parser.add_argument("--skip-ddp", action="store_true", help="Skip the one- vs two-process runs.")
    args = parser.parse_args()

    from medfusion.training.run import demo_manifest

    project = Path(tempfile.mkdtemp(prefix="medfusion-train-data-"))
    manifest = demo_manifest(_config(project, args), progress=False)
    n = _reencode_j2k(manifest.parent)
    print(f"demo cohort: {args.studies} studies, {n} DICOM files re-encoded as JPEG 2000 Lossless "
          f"({args.image_size}x{args.image_size}), model input {args.input_size}x{args.input_size}, "
          f"data.num_workers {args.workers}; {project}")  # fmt: skip
    figures = bench_cache_and_loader(project, args)
    if not args.skip_ddp:
        figures.update(bench_processes(project, args))
    for key, value in figures.items():
        print(f"{key:32s} {value:10.3f}" if isinstance(value, float) else f"{key:32s} {value:10d}")


if __name__ == "__main__":
    main()
