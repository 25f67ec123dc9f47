"""Peak memory of the batch-scoring job against the archive size, in one run (issue #20).

Goal: the peak RSS of a 5,000-study job is within 10 % of a 500-study job (ratio <= 1.10): the job
streams studies (ledger pages, a bounded window of studies in flight, part files of ``--part-size``
rows), so what it holds must not grow with the archive.

For each N in ``--studies`` this generates a demo cohort of N studies (``medfusion demo-data --out
DIR/nN --set data.demo.n_studies=N``; kept under ``--cohort-dir`` and reused by the next run, a
temporary folder otherwise), then runs the real command line as a subprocess::

    medfusion score DIR/nN/dicom --reports DIR/nN/reports --out OUT --model MODEL --workers 2 --no-progress

with ``MLFLOW_TRACKING_URI`` set from ``--tracking-uri`` when given. While it runs, a thread samples
every ``--interval`` seconds (50 ms) the RSS of every process of the job's tree (:class:`TreeSampler`:
the score process and all its descendants, i.e. the forkserver, the decode workers and the discovery
header reader) and records per job:

- ``peak_tree_mb``: the largest sum of RSS over the tree at one sample (pages shared between forked
  processes count once per process, as RSS does; that overstates the machine's use, the same way at
  every N);
- ``peak_main_mb``: the largest RSS of the score process itself (inference, ledger, writer, discovery's
  study list, the report index);
- ``peak_proc_mb``: the largest RSS any single process of the tree reached;
- ``main_mb_at``: the score process's RSS at 25/50/75/100 % of the job's wall time (growth over the run);
- ``wall_s`` and ``scored`` (``scored_this_run`` from ``OUT/summary.json``).

Printed as a table, then ``peak(largest N) / peak(smallest N)`` for the tree and the score process with
the goal (<= 1.10). ``--json PATH`` also writes every figure and the sampled timeline.

    python benchmarks/score_memory.py --model models:/medfusion/1 \\
        --tracking-uri sqlite:////tmp/mem_demo/mlflow.db --cohort-dir /tmp/mem_cohorts \\
        [--studies 500 5000] [--workers 2] [--json out.json]

Memory does not depend on CPU share: running it under ``nice -n 19`` changes the wall times only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

MB = 1024 * 1024
GOAL = 1.10


@dataclass
class TreeMemory:
    """What a :class:`TreeSampler` saw.

    Attributes:
        peak_tree: Largest summed RSS of the tree at one sample, bytes.
        peak_main: Largest RSS of the root process, bytes.
        peak_proc: Largest RSS of any one process of the tree, bytes.
        max_processes: Most processes seen in the tree at one sample.
        samples: Samples taken.
        timeline: ``(seconds since start, tree RSS, root RSS, processes)`` of every sample.
    """

    peak_tree: int = 0
    peak_main: int = 0
    peak_proc: int = 0
    max_processes: int = 0
    samples: int = 0
    timeline: list[tuple[float, int, int, int]] = field(default_factory=list)

    def main_at(self, fraction: float) -> int:
        """The root's RSS at the last sample at or before ``fraction`` of the sampled time, bytes."""
        if not self.timeline:
            return 0
        end = self.timeline[-1][0] * fraction
        return [s for s in self.timeline if s[0] <= end][-1][2] if self.timeline[0][0] <= end else 0


def _rss(proc: psutil.Process) -> int | None:
    try:
        return int(proc.memory_info().rss)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None  # gone between the listing and the read


def tree_rss(root: psutil.Process) -> tuple[int, int, int, int] | None:
    """``(sum of RSS, root's RSS, largest single RSS, processes)`` of ``root`` and its descendants, bytes;
    None when ``root`` is gone."""
    main = _rss(root)
    if not main:
        return None  # gone, or exited and not yet reaped (a zombie's RSS reads 0)
    try:
        children = root.children(recursive=True)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    sizes = [main] + [r for r in map(_rss, children) if r is not None]
    return sum(sizes), main, max(sizes), len(sizes)


class TreeSampler:
    """Samples the summed RSS of a process and all its descendants in a background thread.

    >>> with TreeSampler(proc.pid) as sampler:
    ...     proc.wait()
    >>> sampler.memory.peak_tree

    Args:
        pid: The root process.
        interval_s: Seconds between samples.
    """

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.root = psutil.Process(pid)
        self.interval_s = interval_s
        self.memory = TreeMemory()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-rss", daemon=True)
        self._t0 = time.perf_counter()

    def sample(self) -> None:
        """Take one sample now."""
        seen = tree_rss(self.root)
        if seen is None:
            return
        total, main, largest, n = seen
        m = self.memory
        m.peak_tree, m.peak_main = max(m.peak_tree, total), max(m.peak_main, main)
        m.peak_proc, m.max_processes = max(m.peak_proc, largest), max(m.max_processes, n)
        m.samples += 1
        m.timeline.append((round(time.perf_counter() - self._t0, 3), total, main, n))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> TreeSampler:
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _medfusion() -> list[str]:
    """The ``medfusion`` command of this interpreter's environment."""
    script = Path(sys.executable).with_name("medfusion")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from medfusion.cli import app; app()"]


def demo_cohort(root: Path, n: int) -> Path:
    """The demo cohort of ``n`` studies at ``root/n<n>`` (generated when it is not there yet)."""
    folder = root / f"n{n}"
    if not (folder / "dicom").is_dir() or not (folder / "reports").is_dir():
        print(f"generating a demo cohort of {n} studies in {folder} ...", flush=True)
        cmd = [*_medfusion(), "demo-data", "--out", str(folder), "--set", f"data.demo.n_studies={n}"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return folder


def score_job(
    cohort: Path, out: Path, model: str, workers: int, tracking_uri: str | None, interval_s: float
) -> dict[str, Any]:
    """Run ``medfusion score`` on ``cohort`` into a fresh ``out`` and sample its process tree's memory."""
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ)
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    cmd = [
        *_medfusion(),
        "score",
        str(cohort / "dicom"),
        "--reports",
        str(cohort / "reports"),
        "--out",
        str(out),
        "--model",
        model,
        "--workers",
        str(workers),
        "--no-progress",
    ]
    log = out.with_suffix(".log")
    started = time.perf_counter()
    with open(log, "w") as handle:
        proc = subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT)
        with TreeSampler(proc.pid, interval_s) as sampler:
            rc = proc.wait()
    wall = time.perf_counter() - started
    summary_path = out / "summary.json"
    if rc != 0 or not summary_path.exists():
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"medfusion score failed (exit {rc}) on {cohort}; log {log}:\n{tail}")
    summary = json.loads(summary_path.read_text())
    m = sampler.memory
    return {
        "cohort": str(cohort),
        "scored": summary["scored_this_run"],
        "discovered": summary["discovered"],
        "wall_s": round(wall, 1),
        "peak_tree_mb": round(m.peak_tree / MB, 1),
        "peak_main_mb": round(m.peak_main / MB, 1),
        "peak_proc_mb": round(m.peak_proc / MB, 1),
        "max_processes": m.max_processes,
        "main_mb_at": {f"{int(f * 100)}%": round(m.main_at(f) / MB, 1) for f in (0.25, 0.5, 0.75, 1.0)},
        "samples": m.samples,
        "timeline": [(t, round(tree / MB, 1), round(main / MB, 1), n) for t, tree, main, n in m.timeline],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="Model folder or MLflow URI (models:/medfusion/1).")
    parser.add_argument("--tracking-uri", help="MLflow store of the model (sets MLFLOW_TRACKING_URI for the job).")
    parser.add_argument("--studies", type=int, nargs="+", default=[500, 5000], help="Archive sizes (studies).")
    parser.add_argument("--cohort-dir", type=Path, help="Keep the demo cohorts here (nN/), reused when present.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--interval", type=float, default=0.05, help="Seconds between memory samples.")
    parser.add_argument("--json", type=Path, help="Also write the figures (and timelines) here.")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="medfusion-score-memory-"))
    try:
        cohorts = args.cohort_dir or tmp / "cohorts"
        jobs = {}
        for n in args.studies:
            cohort = demo_cohort(cohorts, n)
            print(f"scoring {n} studies ...", flush=True)
            jobs[n] = score_job(cohort, tmp / f"out{n}", args.model, args.workers, args.tracking_uri, args.interval)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(
        f"{'studies':>8} {'scored':>7} {'wall s':>8} {'tree MB':>9} {'main MB':>9} {'max 1 proc':>11} {'procs':>6}"
        "   main MB at 25/50/75/100 % of the run"
    )
    for n, job in jobs.items():
        at = "/".join(f"{v:.0f}" for v in job["main_mb_at"].values())
        print(
            f"{n:>8} {job['scored']:>7} {job['wall_s']:>8.1f} {job['peak_tree_mb']:>9.1f} {job['peak_main_mb']:>9.1f} "
            f"{job['peak_proc_mb']:>11.1f} {job['max_processes']:>6}   {at}"
        )
    result: dict[str, Any] = {"jobs": {str(n): job for n, job in jobs.items()}, "goal": GOAL}
    if len(jobs) >= 2:
        small, large = min(jobs), max(jobs)
        ratios = {
            key: round(jobs[large][f"peak_{key}_mb"] / jobs[small][f"peak_{key}_mb"], 3) for key in ("tree", "main")
        }
        result["ratios"] = ratios
        print()
        for key, ratio in ratios.items():
            verdict = "meets" if ratio <= GOAL else "misses"
            print(f"peak {key} RSS ({large} / {small} studies): {ratio:.3f}  ({verdict} the goal <= {GOAL:.2f})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
