"""Scoring throughput on the same files and cores, in one run: a stage profile and its CPU-work bound,
the pipeline, pure decoding and a naive loop.

1. **Stage profile** (this process, one torch thread, every study once): per-study CPU time
   (``os.times``: user + system, children included) and wall time of

   - ``discovery``: :meth:`FolderSource.discover` (header scan; the job's default child process),
   - ``decode``: ``read_dicom`` of every file of the study, as the model's preprocessing reads it (2D
     JPEG 2000 at the reduced resolution level the model's input size allows, unless ``--full-decode``),
   - ``preprocess``: :func:`~medfusion.scoring.engine_local.prepare_study` (materialize + copies + decode
     + preprocess, exactly the worker's call) minus ``decode``,
   - ``inference``: :meth:`Predictor.score_samples` in batches of ``--batch-size``,
   - ``writing``: result rows -> :class:`PartWriter` parts + ledger commits (``--part-size``).

   CPU-work bound = cores / sum of the per-study CPU times (studies/s): what the machine's cores
   could do if the pipeline added nothing. ``bound (scoring)`` leaves discovery out, as the
   pipeline's scoring-phase rate does.
2. **Pipeline**: :func:`medfusion.scoring.job.run_score` (``--engine``, ``--workers``) into a fresh
   output folder; ``studies_per_s`` of the scoring phase (discovery, model and worker start-up
   excluded) and end to end (studies / whole job); the CPU time of its processes per study, the
   main process's split by thread (its main thread, the process pool's manager and feeder threads,
   this benchmark's poll, other threads such as torch's), and the stage work the job measured in
   the same run (the workers' study tasks, the main process's forward passes).
3. **Decode**: ``read_dicom`` on every file at full resolution (pydicom's default decoders), ``--workers``
   processes.
4. **Naive**: one process, one study at a time: ``Predictor.predict([study])``.

Printed as a table and ratios; goals (issue #20): pipeline >= 0.9 x bound, pipeline >= 5 x naive,
and on lossless JPEG 2000 pipeline >= 3 x the full-resolution decode rate.

``--archive realistic`` scores a realistic archive instead of ``--cohort``: real full-size radiographs
re-encoded in the transfer syntaxes archives hold (:mod:`realistic_archive`; ``--studies``, ``--syntax``;
``--archive-dir`` keeps it for the next run). ``--full-decode`` turns the reduced-resolution JPEG 2000
decode off (``MEDFUSION_REDUCED_DECODE=0`` for this process and its workers): the "before" figures.

    python benchmarks/scoring.py --cohort runs/demo/demo_cohort --model models:/medfusion@champion \\
        --tracking-uri sqlite:///runs/demo/mlflow.db --workers 2 [--engine ray] [--device cuda] [--amp bf16] \\
        [--json out.json]
    python benchmarks/scoring.py --archive realistic --studies 48 --syntax j2kr --model ... [--full-decode]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

STAGES = ("discovery", "decode", "preprocess", "inference", "writing")


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@contextmanager
def _timed(into: dict[str, list[float]], stage: str) -> Iterator[None]:
    """Add ``[cpu_s, wall_s]`` of the block to ``into[stage]``."""
    cpu, wall = _cpu(), time.perf_counter()
    yield
    acc = into.setdefault(stage, [0.0, 0.0])
    acc[0] += _cpu() - cpu
    acc[1] += time.perf_counter() - wall


def stage_profile(
    dicom: Path, reports: Path | None, model_dir: Path, batch_size: int, part_size: int
) -> dict[str, Any]:
    """Per-study CPU and wall milliseconds of each stage (see the module docstring), in this process."""
    import torch

    from medfusion.errors import InputRejected
    from medfusion.inference import Predictor, load_preprocessor
    from medfusion.ingest.dicom.read import read_dicom
    from medfusion.ingest.dicom.reduced import enabled as reduced_enabled
    from medfusion.results import ResultRow
    from medfusion.scoring.engine_local import prepare_study
    from medfusion.scoring.ledger import Ledger
    from medfusion.scoring.resolve import resolve_model
    from medfusion.scoring.sources import FolderSource, ReportIndex
    from medfusion.scoring.writer import PartWriter

    torch.set_num_threads(1)
    totals: dict[str, list[float]] = {}
    source = FolderSource(dicom, file_timeout_s=None)  # headers read here: their CPU time is counted
    with _timed(totals, "discovery"):
        refs = list(source.discover())
    bounded_wall_ms = []
    for _ in range(2):  # the first also starts the forkserver (shared with the job's workers)
        bounded = time.perf_counter()
        list(FolderSource(dicom).discover())  # the job's default: a child process bounds each header read
        bounded_wall_ms.append(1000 * (time.perf_counter() - bounded) / max(1, len(refs)))
    index = ReportIndex.from_path(reports)
    preprocessor = load_preprocessor(model_dir)
    predictor = Predictor.from_dir(model_dir, device="cpu", batch_size=batch_size)
    spec = preprocessor.spec
    min_size = spec.image_size if spec.spatial_dims == 2 and reduced_enabled() else None  # as the chain reads
    for path in refs[0].locator:  # first-call imports of the decoders are not per-study costs
        with suppress(InputRejected):
            read_dicom(path, max_pixels=spec.max_pixels, min_size=min_size)
    for ref in refs:
        with _timed(totals, "decode"):
            for path in ref.locator:
                with suppress(InputRejected):
                    read_dicom(path, max_pixels=spec.max_pixels, min_size=min_size)
    with tempfile.TemporaryDirectory(prefix="bench-work-") as work:  # as the job's work folder (removed)
        # one study and one batch before timing: first-call imports and allocations are not per-study costs
        warm = prepare_study(source, preprocessor, refs[0], index.text(refs[0]), work_root=work)
        if warm.sample is not None:
            predictor.score_samples([warm.sample] * batch_size)
        prepared = []
        with _timed(totals, "prepare"):
            for ref in refs:
                prepared.append(prepare_study(source, preprocessor, ref, index.text(ref), work_root=work))
    ok = [p for p in prepared if p.sample is not None]
    with _timed(totals, "inference"):
        predictions = predictor.score_samples([p.sample for p in ok if p.sample is not None])
    with tempfile.TemporaryDirectory(prefix="bench-write-") as out:
        provenance = resolve_model(str(model_dir)).provenance
        with Ledger(out) as ledger:
            ledger.add_studies(refs)
            writer = PartWriter(Path(out), ledger, part_size=part_size)
            with _timed(totals, "writing"):
                for p, prediction in zip(ok, predictions, strict=True):
                    writer.add(ResultRow.from_prediction(prediction, provenance, study_uid=p.study_uid))
                writer.flush()
    prep = totals.pop("prepare")
    totals["preprocess"] = [prep[0] - totals["decode"][0], prep[1] - totals["decode"][1]]
    n = len(refs)
    per_study = {s: {"cpu_ms": 1000 * totals[s][0] / n, "wall_ms": 1000 * totals[s][1] / n} for s in STAGES}
    return {
        "studies": n,
        "scored": len(ok),
        "files": sum(len(r.locator) for r in refs),
        "stages": per_study,
        "discovery_bounded_wall_ms": bounded_wall_ms,
    }


class TreeCPU:
    """CPU seconds (user + system) used by this process and its descendants while in the block.

    Polls ``/proc`` (Linux) every ``interval`` s and keeps each process's last reading, so workers
    that exit between polls lose at most ``interval`` s of CPU time each; ``seconds`` is None
    where there is no ``/proc``. The poll walks only this process's tree (a few files per process).
    """

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.seconds: float | None = None
        self.main_seconds: float | None = None  # this process alone (the rest: its descendants)
        self.main_threads: dict[str, float] = {}  # this process's CPU seconds by thread role (see _role)
        self._last: dict[int, float] = {}
        self._threads_start: dict[int, float] = {}
        self._threads_last: dict[int, float] = {}
        self._roles: dict[int, str] = {}
        self._stop = threading.Event()
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def _cpu_s(self, stat: str) -> float:
        """User + system CPU seconds from a ``/proc/.../stat`` file (raises OSError, ValueError)."""
        with open(stat, encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self._tick

    def _tree(self) -> dict[int, float]:
        """pid -> CPU seconds of this process and its descendants (``/proc/<pid>/task/*/children``)."""
        times: dict[int, float] = {}
        todo = [os.getpid()]
        while todo:
            pid = todo.pop()
            try:
                times[pid] = self._cpu_s(f"/proc/{pid}/stat")
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as handle:
                        todo += [int(c) for c in handle.read().split()]
            except (OSError, ValueError):
                continue
        return times

    def _threads(self) -> dict[int, float]:
        """Thread id -> CPU seconds of each thread of this process (and the role of each Python thread)."""
        for thread in threading.enumerate():
            if thread.native_id is not None:
                self._roles[thread.native_id] = _role(thread)
        times: dict[int, float] = {}
        for task in os.listdir("/proc/self/task"):
            with suppress(OSError, ValueError):
                times[int(task)] = self._cpu_s(f"/proc/self/task/{task}/stat")
        return times

    def mark(self) -> None:
        """Count from now on (e.g. once the workers are up)."""
        self._start = self._tree()
        self._last = dict(self._start)
        self._threads_start = self._threads()
        self._threads_last = dict(self._threads_start)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self._last.update(self._tree())
            self._threads_last.update(self._threads())

    def __enter__(self) -> TreeCPU:
        if not os.path.isdir("/proc"):
            return self
        self.mark()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not os.path.isdir("/proc"):
            return
        self._stop.set()
        self._thread.join()
        self._last.update(self._tree())
        self._threads_last.update(self._threads())
        self.seconds = sum(t - self._start.get(pid, 0.0) for pid, t in self._last.items())
        me = os.getpid()
        self.main_seconds = self._last.get(me, 0.0) - self._start.get(me, 0.0)
        self.main_threads = dict.fromkeys(THREAD_ROLES, 0.0)
        for tid, t in self._threads_last.items():
            role = self._roles.get(tid, "other")
            self.main_threads[role] += t - self._threads_start.get(tid, 0.0)


#: Roles of the main process's threads, as :class:`TreeCPU` splits its CPU time.
THREAD_ROLES = ("main thread", "pool manager", "pool feeder", "this benchmark", "other")


def _role(thread: threading.Thread) -> str:
    """What a thread of the main process does: the job's main thread, the process pool's manager or
    feeder thread, this benchmark's own poll, or other (threads Python does not know: torch's
    intra-op threads, codecs)."""
    if thread is threading.main_thread():
        return "main thread"
    if type(thread).__name__ == "_ExecutorManagerThread":
        return "pool manager"
    target = getattr(thread, "_target", None)
    if getattr(target, "__name__", "") == "_feed":
        return "pool feeder"
    if getattr(target, "__self__", None).__class__ is TreeCPU:
        return "this benchmark"
    return "other"


def _read(path: str) -> int:
    from medfusion.errors import InputRejected
    from medfusion.ingest.dicom.read import read_dicom

    try:
        return int(read_dicom(path).pixels.numel())
    except InputRejected:
        return 0


def _warm() -> None:
    import medfusion.ingest.dicom.read  # noqa: F401  (import cost is not decode cost)


def _noop(_: int) -> None:
    return None


def decode_rate(study_paths: list[list[str]], workers: int) -> float:
    """Studies/s for reading every file once, ``workers`` processes."""
    from medfusion.processes import worker_context

    files = [p for paths in study_paths for p in paths]
    with ProcessPoolExecutor(workers, mp_context=worker_context(), initializer=_warm) as pool:
        list(pool.map(_noop, range(workers)))  # processes started, as the pipeline's are
        start = time.perf_counter()
        list(pool.map(_read, files, chunksize=4))
        elapsed = time.perf_counter() - start
    return len(study_paths) / elapsed


def _prepare_share(
    task: tuple[Path, Path | None, Path, int, int],
) -> tuple[float, int]:
    """CPU seconds and studies of :func:`prepare_study` over share ``i`` of ``n`` of the studies (one process)."""
    import torch

    from medfusion.inference import load_preprocessor
    from medfusion.scoring.engine_local import prepare_study
    from medfusion.scoring.sources import FolderSource, ReportIndex

    dicom, reports, model_dir, i, n = task
    torch.set_num_threads(1)
    source = FolderSource(dicom, file_timeout_s=None)
    refs = list(source.discover())
    index = ReportIndex.from_path(reports)
    preprocessor = load_preprocessor(model_dir)
    mine = refs[i::n]
    with tempfile.TemporaryDirectory(prefix="bench-work-") as work:  # as the job's work folder (removed)
        prepare_study(source, preprocessor, refs[0], index.text(refs[0]), work_root=work)  # first-call imports
        cpu = time.process_time()
        for ref in mine:
            prepare_study(source, preprocessor, ref, index.text(ref), work_root=work)
        return time.process_time() - cpu, len(mine)


def contended_prepare_ms(dicom: Path, reports: Path | None, model_dir: Path, workers: int) -> float:
    """CPU ms/study of the workers' stage work (:func:`prepare_study`) with ``workers`` processes doing it at
    once, each its share of the studies: the stage profile's decode + preprocess as it costs when every
    worker core is busy (shared caches and memory bandwidth), without the pipeline around it."""
    from medfusion.processes import worker_context

    with ProcessPoolExecutor(workers, mp_context=worker_context(), initializer=_warm) as pool:
        list(pool.map(_noop, range(workers)))
        done = list(pool.map(_prepare_share, [(dicom, reports, model_dir, i, workers) for i in range(workers)]))
    return 1000 * sum(c for c, _ in done) / max(1, sum(k for _, k in done))


def pipeline_rate(
    dicom: Path,
    reports: Path | None,
    model_dir: Path,
    engine: str,
    workers: int,
    batch_size: int,
    part_size: int,
    device: str,
    amp: str,
) -> dict[str, float]:
    """:func:`run_score` into a fresh folder: scoring-phase and end-to-end studies/s, studies scored, and the
    CPU time of the scoring phase per study: all the job's processes, the main process (inference,
    writing, the pool's bookkeeping) and the rest (the workers); and (local engine; 0 with Ray) the
    stage work's CPU per study as the job measures it in the same run: worker CPU inside each study's
    task plus the main process's forward passes."""
    from medfusion.inference import Predictor
    from medfusion.scoring import engine_local
    from medfusion.scoring.job import EngineContext, ScoreOptions, run_score

    started = EngineContext.started
    # The stage work as the job itself measures it (local engine): each study's CPU in its worker
    # (``Prepared.cpu_s``, as the job reports it to size its inference threads) and the CPU of the
    # main process's forward passes, in the same seconds as the pipeline's rate.
    in_run = {"worker_cpu_s": 0.0, "studies": 0.0, "inference_cpu_s": 0.0}
    record, score_samples = engine_local.record_set_aside, Predictor.score_samples

    def counted(ctx: EngineContext, prepared: Any) -> None:
        in_run["worker_cpu_s"] += prepared.cpu_s
        in_run["studies"] += 1
        record(ctx, prepared)

    def timed(self: Any, samples: Any) -> Any:
        cpu = time.process_time()
        try:
            return score_samples(self, samples)
        finally:
            in_run["inference_cpu_s"] += time.process_time() - cpu

    engine_local.record_set_aside = counted
    Predictor.score_samples = timed  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix="bench-score-") as out, TreeCPU() as cpu:

        def mark_started(ctx: EngineContext) -> None:
            cpu.mark()  # CPU of the scoring phase only, as ``studies_per_s``
            started(ctx)

        EngineContext.started = mark_started  # type: ignore[method-assign,assignment]
        try:
            summary = run_score(
                ScoreOptions(
                    source=str(dicom),
                    reports=reports,
                    model=str(model_dir),
                    out_dir=Path(out),
                    engine=engine,
                    workers=workers,
                    batch_size=batch_size,
                    part_size=part_size,
                    device=device,
                    amp=amp,
                )
            )
        finally:
            EngineContext.started = started  # type: ignore[method-assign]
            engine_local.record_set_aside = record
            Predictor.score_samples = score_samples  # type: ignore[method-assign]
    scored = max(1, summary.scored_this_run)
    main_s = cpu.main_seconds or 0.0
    in_run_ms = 1000 / in_run["studies"] if in_run["studies"] else 0.0  # per study, of CPU seconds
    return {
        "cpu_ms_per_study": 1000 * cpu.seconds / scored if cpu.seconds else 0.0,
        "main_cpu_ms_per_study": 1000 * main_s / scored if cpu.seconds else 0.0,
        "main_threads_ms_per_study": {k: 1000 * v / scored for k, v in cpu.main_threads.items()},
        "workers_cpu_ms_per_study": 1000 * (cpu.seconds - main_s) / scored if cpu.seconds else 0.0,
        "in_run_worker_ms_per_study": in_run_ms * in_run["worker_cpu_s"],
        "in_run_inference_ms_per_study": in_run_ms * in_run["inference_cpu_s"],
        "in_run_stage_cpu_ms_per_study": in_run_ms * (in_run["worker_cpu_s"] + in_run["inference_cpu_s"]),
        "scoring": summary.studies_per_s,
        "end_to_end": summary.scored_this_run / summary.elapsed_s if summary.elapsed_s else 0.0,
        "scored": float(summary.scored_this_run),
    }


def naive_rate(studies: list[tuple[list[str], str]], model_dir: Path, device: str, amp: str) -> float:
    """Studies/s of one-at-a-time read + preprocess + predict in this process."""
    from medfusion.inference import Predictor, StudyInput

    predictor = Predictor.from_dir(model_dir, device=device, batch_size=1, amp=amp)
    start = time.perf_counter()
    for paths, text in studies:
        predictor.predict([StudyInput(image_paths=paths, report_text=text)])
    return len(studies) / (time.perf_counter() - start)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def table(figures: dict[str, Any]) -> str:
    """The stage table, each repeat's rates and ratios, and their medians, as printed."""
    stages = figures["profile"]["stages"]
    repeats = figures["repeats"]
    lines = [
        f"stage profile, median of {len(repeats)} repeat(s)",
        f"{'stage':<12} {'CPU ms/study':>13} {'wall ms/study':>14}",
    ]
    lines += [f"{s:<12} {stages[s]['cpu_ms']:>13.2f} {stages[s]['wall_ms']:>14.2f}" for s in STAGES]
    total = sum(v["cpu_ms"] for v in stages.values())
    lines.append(f"{'sum':<12} {total:>13.2f}")
    first, again = figures["profile"]["discovery_bounded_wall_ms"]
    lines.append(
        f"(discovery with the job's per-file time bound, a child process: {first:.2f} ms/study wall, "
        f"{again:.2f} once the forkserver is up)"
    )
    lines += [
        "",
        f"cores {figures['cores']}, {figures['engine']} engine, {figures['workers']} workers, "
        f"batch {figures['batch_size']}, {figures['profile']['studies']} studies, "
        f"reduced JPEG 2000 decode {'on' if figures.get('reduced_decode', True) else 'off'}",
        "",
        "CPU ms/study, the pipeline's processes against the stages they run (per repeat):",
        f"{'repeat':<7} {'load':>5} {'main':>7} {'infer+write':>12} {'in-run forward':>15} {'workers':>8} "
        f"{'decode+prep':>12} {'same, all workers at once':>26} {'in-run tasks':>13} {'in-run stages':>14} "
        f"{'stage/pipeline':>15}",
    ]
    for i, r in enumerate(repeats, 1):
        lines.append(
            f"{i:<7} {r['load_average']:>5.1f} {r['main_cpu_ms']:>7.2f} {r['main_stages_ms']:>12.2f} "
            f"{r.get('in_run_inference_ms', 0.0):>15.2f} {r['workers_cpu_ms']:>8.2f} {r['worker_stages_ms']:>12.2f} "
            f"{r['contended_ms']:>26.2f} {r.get('in_run_worker_ms', 0.0):>13.2f} {r['in_run_stage_ms']:>14.2f} "
            f"{r['stage_over_pipeline_cpu']:>15.2f}"
        )
    lines += ["", "the main process's CPU ms/study by thread (per repeat):", "repeat  " + "  ".join(THREAD_ROLES)]
    for i, r in enumerate(repeats, 1):
        split = r.get("main_threads_ms", {})
        lines.append(f"{i:<7} " + "  ".join(f"{split.get(k, 0.0):>{len(k)}.3f}" for k in THREAD_ROLES))
    lines += [
        "",
        "rates (studies/s) and ratios, per repeat:",
        f"{'repeat':<7} {'bound':>7} {'pipeline':>9} {'naive':>7} {'pipe/bound':>11} {'pipe/in-run':>12} "
        f"{'pipe/naive':>11} {'end to end':>11}",
    ]
    for i, r in enumerate(repeats, 1):
        lines.append(
            f"{i:<7} {r['bound_scoring']:>7.1f} {r['pipeline']:>9.1f} {r['naive']:>7.1f} "
            f"{r['pipeline_over_bound']:>11.2f} {r['pipeline_over_in_run_bound']:>12.2f} "
            f"{r['pipeline_over_naive']:>11.2f} {r['pipeline_end_to_end']:>11.1f}"
        )
    r, q = figures["rates"], figures["ratios"]
    lines += [
        "",
        f"medians of {len(repeats)} repeat(s)",
        f"{'rate (studies/s)':<34} {'':>8}",
        f"{'CPU-work bound, all stages':<34} {r['bound']:>8.1f}",
        f"{'CPU-work bound, scoring stages':<34} {r['bound_scoring']:>8.1f}",
        f"{'pipeline, scoring phase':<34} {r['pipeline']:>8.1f}",
        f"{'pipeline, end to end':<34} {r['pipeline_end_to_end']:>8.1f}",
        f"{'full decode (' + str(figures['workers']) + ' processes, once)':<34} {r['decode']:>8.1f}",
        f"{'naive loop':<34} {r['naive']:>8.1f}",
        "",
        f"pipeline / bound (scoring) = {q['pipeline_over_bound']:.2f}  (goal >= 0.9)",
        f"pipeline / in-run bound    = {q['pipeline_over_in_run_bound']:.2f}  "
        "(the bound from the stage CPU the job measured in the same run: host speed drift cancels)",
        f"end to end / bound (all)   = {q['end_to_end_over_bound']:.2f}",
        f"pipeline / naive           = {q['pipeline_over_naive']:.2f}  (goal >= 5)",
        f"pipeline / full decode     = {q['pipeline_over_decode']:.2f}  (goal >= 3 on lossless JPEG 2000)",
        f"stage CPU / pipeline CPU   = {q['stage_over_pipeline_cpu']:.2f}  (CPU-work efficiency)",
        f"bound / naive              = {q['bound_over_naive']:.2f}  (the most a pipeline on these cores reaches)",
    ]
    return "\n".join(lines)


def _loadavg() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def run(args: argparse.Namespace, step: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """All measurements of one run (see the module docstring).

    The stage profile, the workers' stage work at once, the pipeline and the naive loop are repeated
    ``args.repeat`` times, in that order each time, so that each pipeline run has its yardsticks
    measured next to it under the same outside load; ratios are taken per repeat, then their median.
    The full-resolution decode (slow on JPEG 2000) runs once.
    """
    import torch

    from medfusion.ingest.dicom.reduced import enabled as reduced_enabled
    from medfusion.processes import retain_freed_memory
    from medfusion.scoring.resolve import resolve_model
    from medfusion.scoring.sources import FolderSource, ReportIndex

    retain_freed_memory()  # as `medfusion score` and its workers: every stage under the job's allocator setting
    default_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    dicom = args.cohort / "dicom" if (args.cohort / "dicom").is_dir() else args.cohort
    reports = args.reports or (args.cohort / "reports" if (args.cohort / "reports").is_dir() else None)
    n = cores()
    profiles: list[dict[str, Any]] = []
    repeats: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-model-") as cache:
        model_dir = resolve_model(args.model, tracking_uri=args.tracking_uri, cache_dir=cache).model_dir
        refs = list(FolderSource(dicom, file_timeout_s=None).discover())
        index = ReportIndex.from_path(reports)
        studies = [(list(r.locator), index.text(r)) for r in refs]
        for i in range(args.repeat):
            tag = f" ({i + 1}/{args.repeat})"
            step("stage profile" + tag)
            profile = stage_profile(dicom, reports, model_dir, args.batch_size, args.part_size)
            step("stage work on every worker at once" + tag)
            contended = contended_prepare_ms(dicom, reports, model_dir, args.workers)
            step("pipeline" + tag)
            torch.set_num_threads(default_threads)  # the job's threads as the CLI leaves them (the engine decides)
            load = _loadavg()
            pipe = pipeline_rate(
                dicom,
                reports,
                model_dir,
                args.engine,
                args.workers,
                args.batch_size,
                args.part_size,
                args.device,
                args.amp,
            )
            load = max(load, _loadavg())
            torch.set_num_threads(1)
            step("naive" + tag)
            naive = naive_rate(studies, model_dir, args.device, args.amp)
            stages = profile["stages"]
            total_ms = sum(v["cpu_ms"] for v in stages.values())
            scoring_ms = total_ms - stages["discovery"]["cpu_ms"]
            bound_scoring = 1000 * n / scoring_ms
            profiles.append(profile)
            repeats.append(
                {
                    "load_average": load,
                    "bound": 1000 * n / total_ms,
                    "bound_scoring": bound_scoring,
                    "pipeline": pipe["scoring"],
                    "pipeline_end_to_end": pipe["end_to_end"],
                    "pipeline_scored": pipe["scored"],
                    "naive": naive,
                    "pipeline_cpu_ms": pipe["cpu_ms_per_study"],
                    "main_cpu_ms": pipe["main_cpu_ms_per_study"],
                    "main_threads_ms": pipe["main_threads_ms_per_study"],
                    "workers_cpu_ms": pipe["workers_cpu_ms_per_study"],
                    "main_stages_ms": stages["inference"]["cpu_ms"] + stages["writing"]["cpu_ms"],
                    "worker_stages_ms": stages["decode"]["cpu_ms"] + stages["preprocess"]["cpu_ms"],
                    "contended_ms": contended,
                    "in_run_stage_ms": pipe["in_run_stage_cpu_ms_per_study"],
                    "in_run_inference_ms": pipe["in_run_inference_ms_per_study"],
                    "in_run_worker_ms": pipe["in_run_worker_ms_per_study"],
                    "pipeline_over_in_run_bound": (
                        pipe["scoring"] * pipe["in_run_stage_cpu_ms_per_study"] / (1000 * n)
                        if pipe["in_run_stage_cpu_ms_per_study"]
                        else 0.0
                    ),
                    "pipeline_over_bound": pipe["scoring"] / bound_scoring,
                    "end_to_end_over_bound": pipe["end_to_end"] / (1000 * n / total_ms),
                    "pipeline_over_naive": pipe["scoring"] / naive,
                    "bound_over_naive": bound_scoring / naive,
                    "stage_over_pipeline_cpu": scoring_ms / pipe["cpu_ms_per_study"]
                    if pipe["cpu_ms_per_study"]
                    else 0.0,
                }
            )
        step("decode")
        decode = decode_rate([paths for paths, _ in studies], args.workers)
    median_profile = dict(profiles[0])
    median_profile["stages"] = {
        s: {k: _median([p["stages"][s][k] for p in profiles]) for k in ("cpu_ms", "wall_ms")} for s in STAGES
    }
    rates = {
        k: _median([r[k] for r in repeats])
        for k in ("bound", "bound_scoring", "pipeline", "pipeline_end_to_end", "pipeline_scored", "naive")
    }
    rates["decode"] = decode
    ratios = {
        k: _median([r[k] for r in repeats])
        for k in (
            "pipeline_over_bound",
            "pipeline_over_in_run_bound",
            "end_to_end_over_bound",
            "pipeline_over_naive",
            "bound_over_naive",
            "stage_over_pipeline_cpu",
        )
    }
    ratios["pipeline_over_decode"] = _median([r["pipeline"] / decode for r in repeats])
    return {
        "cores": n,
        "engine": args.engine,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "device": args.device,
        "amp": args.amp,
        "reduced_decode": reduced_enabled(),
        "profile": median_profile,
        "repeats": repeats,
        "load_average": max(r["load_average"] for r in repeats),
        "pipeline_cpu_ms_per_study": _median([r["pipeline_cpu_ms"] for r in repeats]),
        "rates": rates,
        "ratios": ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", type=Path, help="Demo cohort folder (dicom/ + reports/) or a DICOM folder.")
    parser.add_argument("--archive", choices=("realistic",), help="Generate and score a realistic archive instead.")
    parser.add_argument("--studies", type=int, default=500, help="Studies of the realistic archive.")
    parser.add_argument("--syntax", action="append", help="Transfer syntaxes of the realistic archive (repeatable).")
    parser.add_argument("--archive-dir", type=Path, help="Keep the realistic archive here (reused when present).")
    parser.add_argument("--full-decode", action="store_true", help="Turn the reduced JPEG 2000 decode off.")
    parser.add_argument("--reports", type=Path, default=None, help="Reports (default: <cohort>/reports when present).")
    parser.add_argument("--model", required=True, help="Model folder or MLflow URI.")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--engine", default="local", choices=("local", "ray"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--part-size", type=int, default=256)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (inference of the pipeline and the naive loop).")
    parser.add_argument(
        "--amp",
        default="auto",
        help="Mixed precision of that inference: auto (bf16 on a GPU with it), bf16, fp16, off.",
    )
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    parser.add_argument(
        "--repeat", type=int, default=3, help="Repeats of stage profile, pipeline and naive loop (median reported)."
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.full_decode:
        os.environ["MEDFUSION_REDUCED_DECODE"] = "0"  # before any worker starts: they inherit it
    with tempfile.TemporaryDirectory(prefix="bench-archive-") as tmp:
        if args.archive == "realistic":
            args.cohort = archive(args.archive_dir or Path(tmp), args.studies, args.syntax)
        elif args.cohort is None:
            parser.error("give --cohort or --archive realistic")
        figures = run(args, step=lambda name: print(f"... {name}", flush=True))
    print(table(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


def archive(folder: Path, studies: int, syntaxes: list[str] | None) -> Path:
    """The realistic archive in ``folder``: reused when its ``archive.json`` matches, else written."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from realistic_archive import SYNTAXES, build

    codes = syntaxes or list(SYNTAXES)
    record = folder / "archive.json"
    if record.is_file():
        seen = json.loads(record.read_text(encoding="utf-8"))
        if seen.get("studies") == studies and sorted(seen.get("per_syntax", {})) == sorted(codes):
            print(f"... reusing the archive in {folder}", flush=True)
            return folder
        raise SystemExit(f"{folder} holds another archive ({record}); give an empty --archive-dir")
    print(f"... writing a realistic archive of {studies} studies ({', '.join(codes)}) to {folder}", flush=True)
    print(json.dumps(build(folder, studies, codes)), flush=True)
    return folder


if __name__ == "__main__":
    main()
