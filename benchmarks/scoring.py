"""Scoring throughput on the same files and cores: (a) pure decode, (b) our pipeline, (c) a naive loop.

(a) ``read_dicom`` on every file of every study, in a process pool of ``--workers`` processes;
(b) ``medfusion.scoring`` (local engine, ``--workers`` decode workers, batched inference) into a fresh
    output folder (discovery and model resolution excluded, as (a) excludes the folder walk);
(c) one process, one study at a time: read + preprocess + predict (``Predictor.predict([study])``).

All three are reported in studies/s; goals: b/a >= 0.9 (the pipeline is decode-bound), b/c >= 5.

    python benchmarks/scoring.py --cohort runs/demo/demo_cohort --model models:/medfusion@champion \\
        --tracking-uri sqlite:///runs/demo/mlflow.db --workers 2 [--device cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def _read(path: str) -> int:
    from medfusion.errors import InputRejected
    from medfusion.ingest.dicom.read import read_dicom

    try:
        return int(read_dicom(path).pixels.numel())
    except InputRejected:
        return 0


def _warm() -> None:
    import medfusion.ingest.dicom.read  # noqa: F401  (import cost is not decode cost)


def decode_rate(study_paths: list[list[str]], workers: int) -> float:
    """(a) studies/s for reading every file once, ``workers`` processes."""
    from medfusion.scoring.engine_local import _context

    files = [p for paths in study_paths for p in paths]
    with ProcessPoolExecutor(workers, mp_context=_context(), initializer=_warm) as pool:
        list(pool.map(_warm_noop, range(workers)))  # processes started, as the pipeline's are
        start = time.perf_counter()
        list(pool.map(_read, files, chunksize=4))
        elapsed = time.perf_counter() - start
    return len(study_paths) / elapsed


def _warm_noop(_: int) -> None:
    return None


def pipeline_rate(
    cohort: Path,
    reports: Path | None,
    model: str,
    tracking_uri: str | None,
    workers: int,
    batch_size: int,
    device: str,
) -> tuple[float, int]:
    """(b) studies/s of :func:`medfusion.scoring.job.run_score` (scoring phase), and studies scored."""
    from medfusion.scoring.job import ScoreOptions, run_score

    with tempfile.TemporaryDirectory(prefix="bench-score-") as out:
        summary = run_score(
            ScoreOptions(
                source=str(cohort),
                reports=reports,
                model=model,
                out_dir=Path(out),
                workers=workers,
                batch_size=batch_size,
                part_size=256,
                device=device,
                tracking_uri=tracking_uri,
            )
        )
    return summary.studies_per_s, summary.scored


def naive_rate(studies: list[tuple[list[str], str]], model_dir: Path, device: str) -> float:
    """(c) studies/s of one-at-a-time read + preprocess + predict in this process."""
    from medfusion.inference import Predictor, StudyInput

    predictor = Predictor.from_dir(model_dir, device=device, batch_size=1)
    start = time.perf_counter()
    for paths, text in studies:
        predictor.predict([StudyInput(image_paths=paths, report_text=text)])
    return len(studies) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--cohort",
        type=Path,
        required=True,
        help="Demo cohort folder (dicom/ + reports/) or a DICOM folder.",
    )
    parser.add_argument(
        "--reports",
        type=Path,
        default=None,
        help="Reports (default: <cohort>/reports when present).",
    )
    parser.add_argument("--model", required=True, help="Model folder or MLflow URI.")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (inference of b and c).")
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    args = parser.parse_args()

    import torch

    from medfusion.scoring.resolve import resolve_model
    from medfusion.scoring.sources import FolderSource, ReportIndex

    torch.set_num_threads(1)
    dicom = args.cohort / "dicom" if (args.cohort / "dicom").is_dir() else args.cohort
    reports = args.reports or (args.cohort / "reports" if (args.cohort / "reports").is_dir() else None)
    refs = list(FolderSource(dicom).discover())
    index = ReportIndex.from_path(reports)
    studies = [(list(r.locator), index.text(r)) for r in refs]
    with tempfile.TemporaryDirectory(prefix="bench-model-") as cache:
        resolved = resolve_model(args.model, tracking_uri=args.tracking_uri, cache_dir=cache)
        a = decode_rate([paths for paths, _ in studies], args.workers)
        b, scored = pipeline_rate(
            dicom,
            reports,
            str(resolved.model_dir),
            None,
            args.workers,
            args.batch_size,
            args.device,
        )
        c = naive_rate(studies, resolved.model_dir, args.device)
    figures = {
        "studies": len(studies),
        "files": sum(len(p) for p, _ in studies),
        "scored": scored,
        "workers": args.workers,
        "device": args.device,
        "decode_studies_per_s": round(a, 2),
        "pipeline_studies_per_s": round(b, 2),
        "naive_studies_per_s": round(c, 2),
        "b_over_a": round(b / a, 3),
        "b_over_c": round(b / c, 3),
    }
    print(json.dumps(figures, indent=2))
    print(f"b/a = {b / a:.2f} (goal >= 0.9)   b/c = {b / c:.2f} (goal >= 5)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
