"""The embedded engine: a process pool decodes and preprocesses, the main process runs batched inference.

::

    ledger (pending refs) --submit--> worker processes: materialize + decode + preprocess (CPU)
                 ^  bounded window            | samples ((C, *spatial) tensors + report text)
                 |                            v
          PartWriter <-- rows -- main process: batches of ``batch_size`` -> model (GPU + AMP when present)

Studies go to the workers in tasks of one or more (as many as make ~50 ms of worker CPU, from what
the studies so far cost: :mod:`medfusion.scoring.tasks`), so the pool's per-task bookkeeping in the
main process is paid once per task, not once per study.

At most ``window = 2 * batch_size + 2 * workers`` studies are in flight or waiting for inference, so
memory stays bounded whatever the archive size. The window is a double buffer: while the main
process runs a forward pass on one batch, the next batch (and two studies per worker) is still
queued for the workers, so they never wait for the forward pass (with one batch's worth, the workers
ran dry after a few studies and one core sat idle for most of each forward pass).

The main process's inference is the pipeline's one serial stage; the workers run at a lower CPU
priority (:data:`WORKER_NICE`), so on a CPU-only machine they take the cores the forward pass
leaves, never the other way round. With equal priority the three processes (main + 2 workers) on
two cores each got a third: the workers raced ahead, filled the window and stopped, and the main
process, the bottleneck, then ran alone on one core.

A study whose input is rejected (:class:`~medfusion.errors.InputRejected`) is dead-lettered with the
file and the reason. When a worker process dies (segfault in a codec, out of memory, ``os._exit``)
the pool is rebuilt and the studies that were in flight (every study of an unfinished task) are
retried one at a time; a study that kills its worker alone ``max_attempts`` times is dead-lettered
(stage ``worker-crash``).

Wall time is bounded per file: a worker reports each step it starts (materializing the study, then
every file it reads, through :func:`medfusion.ingest.dicom.watch.watch_files`) to the main process, which
stops a worker whose step has run longer than ``options.file_timeout_s``. That study is
dead-lettered with the file and the reason (``decode exceeded 60 s ...``, stage ``decode`` or
``materialize``), and the other studies the stop interrupted (on the other workers, and those of
the stopped worker's task) are submitted again.

Copies of one instance (same SOPInstanceUID in several files) are chosen in the worker by what
decodes (:func:`medfusion.ingest.dicom.studies.resolve_copies`); each copy set aside is dead-lettered as a
file of its study (stage ``decode``) while the study goes on.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import shutil
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medfusion.dicom_sr.source import SourceStudy, read_source_study
from medfusion.errors import InputRejected, MedfusionError
from medfusion.inference import Predictor, StudyInput, load_preprocessor
from medfusion.ingest.dicom.read import read_dicom
from medfusion.ingest.dicom.studies import resolve_copies
from medfusion.ingest.dicom.watch import watch_files
from medfusion.ingest.records import Rejection
from medfusion.processes import retain_freed_memory, worker_context
from medfusion.processing.preprocessor import Preprocessor
from medfusion.processing.sample import Sample
from medfusion.scoring.sources import StudyRef, StudySource
from medfusion.scoring.tasks import TaskSize
from medfusion.scoring.threads import InferenceThreads
from medfusion.scoring.workdir import study_workdir

if TYPE_CHECKING:  # job.py imports the engines lazily; the engines need the context type only
    from medfusion.scoring.job import EngineContext

log = logging.getLogger(__name__)

CRASH_STAGE = "worker-crash"
#: Niceness added to each worker process (lower CPU priority than the main process's inference).
WORKER_NICE = 5
#: Longest wait for a result before the main process checks the workers' step times, seconds.
POLL_S = 1.0


@dataclass
class Prepared:
    """A study after the CPU stage: a sample, or why there is none.

    Attributes:
        study_uid: StudyInstanceUID.
        sample: The model sample (:class:`~medfusion.processing.sample.Sample`), or None.
        file: The file that was rejected (None when not file-specific).
        reason: Why the study was rejected, or None.
        stage: ``materialize`` or ``decode`` when rejected.
        set_aside: Copies of an instance not used because another copy was chosen (with why).
        source: The study's headers for its DICOM SR (identifiers included), when SRs are written.
        cpu_s: CPU seconds the worker spent on the study (what sizes the main process's inference threads).
    """

    study_uid: str
    sample: Sample | None = None
    file: str | None = None
    reason: str | None = None
    stage: str | None = None
    set_aside: list[Rejection] = field(default_factory=list)
    source: SourceStudy | None = None
    cpu_s: float = 0.0

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle the sample's tensors by value, as numpy arrays.

        Through the pool, torch's own reduction moves every tensor into shared memory and passes a
        file descriptor for it (about 1 ms per sample, on the main process's result path); a sample
        is a few KB.
        """
        s = self.sample
        arrays = None
        if s is not None:
            image = None if s.image is None else s.image.numpy()
            arrays = (image, s.input_ids.numpy(), s.report, s.label.numpy(), s.study_uid)
        return (
            _unpickle_prepared,
            (self.study_uid, arrays, self.file, self.reason, self.stage, self.set_aside, self.source, self.cpu_s),
        )


def _unpickle_prepared(
    study_uid: str,
    arrays: tuple[Any, Any, str, Any, str | None] | None,
    file: str | None,
    reason: str | None,
    stage: str | None,
    set_aside: list[Rejection],
    source: SourceStudy | None = None,
    cpu_s: float = 0.0,
) -> Prepared:
    import torch

    sample = None
    if arrays is not None:
        image, input_ids, report, label, uid = arrays
        image_t = None if image is None else torch.from_numpy(image)
        sample = Sample(image_t, torch.from_numpy(input_ids), report, torch.from_numpy(label), uid)
    return Prepared(study_uid, sample, file, reason, stage, set_aside, source, cpu_s)


def prepare_study(
    source: StudySource,
    preprocessor: Preprocessor,
    ref: StudyRef,
    report_text: str,
    *,
    sr: bool = False,
    work_root: str | None = None,
) -> Prepared:
    """Materialize, choose among copies of an instance, decode and preprocess one study (worker side,
    shared by both engines).

    With ``sr`` the headers of the files used are read too (:func:`medfusion.dicom_sr.source.read_source_study`,
    stage ``sr`` when that fails): the only path on which identifiers leave the worker, in memory, for
    the study's DICOM SR.

    The study's files, if the source writes any, go to a folder inside ``work_root``, the job's work
    folder (:mod:`medfusion.scoring.workdir`), and are removed when the study is done.

    Typed input errors become a rejected :class:`Prepared`; anything else is a bug and propagates.
    """
    workdir = study_workdir(work_root)
    stage = "materialize"
    set_aside: list[Rejection] = []
    try:
        paths = source.materialize(ref, workdir)
        stage = "decode"
        if preprocessor.uses_image:
            decode = functools.partial(read_dicom, max_pixels=preprocessor.spec.max_pixels)
            paths, set_aside = resolve_copies(paths, decode)
        study = StudyInput(image_paths=[str(p) for p in paths], report_text=report_text, study_uid=ref.study_uid)
        sample = preprocessor(study)
        headers = None
        if sr:
            stage = "sr"
            headers = read_source_study(paths)
        return Prepared(ref.study_uid, sample, set_aside=set_aside, source=headers)
    except InputRejected as exc:
        return Prepared(ref.study_uid, file=exc.source, reason=exc.reason, stage=stage, set_aside=set_aside)
    except MedfusionError as exc:
        return Prepared(ref.study_uid, reason=str(exc), stage=stage, set_aside=set_aside)
    finally:
        if workdir.exists():
            shutil.rmtree(workdir, ignore_errors=True)


def record_set_aside(ctx: EngineContext, prepared: Prepared) -> None:
    """Dead-letter the copies a study did not use, as files of that study (main side, both engines)."""
    for rejection in prepared.set_aside:
        ctx.ledger.dead_letter_file(rejection.source, rejection.reason, "decode", study_uid=prepared.study_uid)
        log.info("study %s: copy %s set aside: %s", prepared.study_uid, rejection.source, rejection.reason)


# ------------------------------------------------------------------------------------ worker side

_WORKER: dict[str, Any] = {}


def _init_worker(
    source: StudySource, model_dir: str, steps: Any, sr: bool = False, work_root: str | None = None
) -> None:
    import torch

    from medfusion.privacy import install_log_redaction

    install_log_redaction()  # identifiers this worker reads never reach a log line
    torch.set_num_threads(1)
    os.nice(WORKER_NICE)  # the serial stage (the main process's inference) goes first
    retain_freed_memory()  # each file's buffers reuse the last one's pages (no page fault storm per file)
    _WORKER["work_root"] = work_root
    _WORKER["source"] = source
    _WORKER["preprocessor"] = load_preprocessor(model_dir)
    _WORKER["steps"] = steps
    _WORKER["sr"] = sr


def _ready() -> bool:
    return "preprocessor" in _WORKER


def _work(tasks: list[tuple[StudyRef, str]]) -> list[Prepared]:
    """The studies of one pool task (:mod:`medfusion.scoring.tasks`), one after the other."""
    return [_work_one(ref, report_text) for ref, report_text in tasks]


def _work_one(ref: StudyRef, report_text: str) -> Prepared:
    """One study, reporting each step to the main process's :class:`_Watchdog` (see the module docstring)."""
    steps, pid = _WORKER["steps"], os.getpid()

    def step(file: Path | None, *, done: bool = False) -> None:
        steps.put((pid, ref.study_uid, None if file is None else str(file), time.monotonic(), done))

    step(None)  # materializing
    cpu = time.process_time()
    try:
        with watch_files(step):
            prepared = prepare_study(
                _WORKER["source"],
                _WORKER["preprocessor"],
                ref,
                report_text,
                sr=_WORKER["sr"],
                work_root=_WORKER["work_root"],
            )
        prepared.cpu_s = time.process_time() - cpu
        return prepared
    finally:
        step(None, done=True)


# -------------------------------------------------------------------------------------- main side


@dataclass(frozen=True)
class Overdue:
    """A worker whose current step has run past the bound.

    Attributes:
        pid: The worker process.
        study_uid: Its study.
        file: The file it is reading, or None while it materializes the study.
        seconds: How long the step has run.
    """

    pid: int
    study_uid: str
    file: str | None
    seconds: float


class _Watchdog:
    """What each worker of one pool is doing (from the steps it reports), and which step is overdue.

    Args:
        steps: The pool's step queue (a fresh one per pool: a worker stopped while writing to it may
            leave its lock taken).
        bound_s: Longest a step may run, seconds.
    """

    def __init__(self, steps: Any, bound_s: float) -> None:
        self.steps = steps
        self.bound_s = bound_s
        self.current: dict[int, tuple[str, str | None, float]] = {}  # pid -> (study, file, since)

    def _drain(self) -> None:
        while not self.steps.empty():
            pid, study_uid, file, since, done = self.steps.get()
            if done:
                self.current.pop(pid, None)
            else:
                self.current[pid] = (study_uid, file, since)

    def overdue(self, running: set[str]) -> list[Overdue]:
        """Steps of studies in ``running`` (submitted, not finished) that have run past the bound."""
        self._drain()
        now = time.monotonic()
        return [
            Overdue(pid, uid, file, now - since)
            for pid, (uid, file, since) in self.current.items()
            if uid in running and now - since > self.bound_s
        ]


def _stop(pid: int) -> None:
    """Kill the worker process ``pid`` (one of this process's children; gone already is fine)."""
    for child in multiprocessing.active_children():
        if child.pid == pid:
            child.kill()
            return


def run_local(ctx: EngineContext) -> None:
    """Score every pending study of ``ctx.ledger``.

    On CPU the main process runs inference with the torch threads that its measured share of the
    job's CPU work asks for (:class:`~medfusion.scoring.threads.InferenceThreads`: ``cores - workers``,
    at least one, until the first batch is measured), and gives the thread count back afterwards.
    """
    import torch

    options = ctx.options
    predictor = Predictor.from_dir(
        ctx.model.model_dir,
        device=options.device,
        batch_size=options.batch_size,
        amp=options.amp,
    )
    window = 2 * options.batch_size + 2 * options.workers
    task_size = TaskSize.for_window(window, options.workers)
    threads = torch.get_num_threads()
    on_cpu = predictor.loaded.device.type == "cpu"  # CPU inference shares the cores with the workers
    sizing = InferenceThreads(_cores(), options.workers)
    if on_cpu:
        torch.set_num_threads(sizing.threads)
    worker_cpu = 0.0  # CPU seconds the workers spent on the studies taken since the last batch
    mp = worker_context()
    bound_s = getattr(options, "file_timeout_s", None)
    if bound_s is not None and not bound_s > 0:
        raise MedfusionError(f"the per-file time bound must be positive, got {bound_s}")
    watchdog: _Watchdog | None = None

    def new_pool() -> ProcessPoolExecutor:
        nonlocal watchdog
        steps = mp.SimpleQueue()
        watchdog = _Watchdog(steps, bound_s) if bound_s is not None else None
        return ProcessPoolExecutor(
            max_workers=options.workers,
            mp_context=mp,
            initializer=_init_worker,
            initargs=(ctx.source, str(ctx.model.model_dir), steps, ctx.sr_codes is not None, ctx.work_root),
        )

    ready: list[tuple[str, Sample, SourceStudy | None]] = []  # (study_uid, sample, SR headers) waiting for a batch

    def take(prepared: Prepared) -> None:
        nonlocal worker_cpu
        worker_cpu += prepared.cpu_s
        task_size.record(prepared.cpu_s)
        record_set_aside(ctx, prepared)
        if prepared.sample is None:
            ctx.rejected(
                prepared.study_uid,
                prepared.file,
                prepared.reason or "rejected",
                prepared.stage or "decode",
            )
        else:
            ready.append((prepared.study_uid, prepared.sample, prepared.source))

    def score(n: int) -> None:
        nonlocal worker_cpu
        batch, ready[:] = ready[:n], ready[n:]
        cpu = time.process_time()
        predictions = predictor.score_samples([sample for _, sample, _ in batch])
        if on_cpu:
            sizing.record(time.process_time() - cpu, worker_cpu)
            worker_cpu = 0.0
            if sizing.threads != torch.get_num_threads():
                torch.set_num_threads(sizing.threads)
        for (study_uid, _, headers), prediction in zip(batch, predictions, strict=True):
            ctx.scored_prediction(study_uid, prediction, headers)

    refs = ctx.ledger.iter_pending()
    inflight: dict[Future[list[Prepared]], list[StudyRef]] = {}  # a pool task -> its studies
    requeue: deque[StudyRef] = deque()  # never started, or interrupted by the stop of another's worker
    suspects: deque[StudyRef] = deque()  # in flight when a worker died: retried one at a time
    solo: StudyRef | None = None  # the suspect running alone, if any
    exhausted = False
    pool = new_pool()

    def submit(task: list[StudyRef]) -> bool:
        try:
            inflight[pool.submit(_work, [(ref, ctx.reports.text(ref)) for ref in task])] = task
            return True
        except BrokenProcessPool:
            return False

    def next_ref() -> StudyRef | None:
        nonlocal exhausted
        ref = requeue.popleft() if requeue else (None if exhausted else next(refs, None))
        exhausted = exhausted or ref is None
        return ref

    try:
        # Start every worker before timing starts (process start-up is not throughput).
        for started in [pool.submit(_ready) for _ in range(options.workers)]:
            started.result()
    except BrokenProcessPool:
        pool.shutdown(wait=True, cancel_futures=True)
        pool = new_pool()
    ctx.started()
    try:
        while True:
            broken = False
            if suspects or solo is not None:
                if not inflight:
                    solo = suspects.popleft()
                    if not submit([solo]):
                        suspects.appendleft(solo)
                        solo, broken = None, True
            else:
                size = task_size.studies
                while sum(map(len, inflight.values())) + len(ready) + size <= window:
                    task: list[StudyRef] = []
                    while len(task) < size and (ref := next_ref()) is not None:
                        task.append(ref)
                    if not task:
                        break
                    if not submit(task):
                        requeue.extendleft(reversed(task))
                        broken = True
                        break
            stopped: dict[str, Overdue] = {}
            if inflight:
                done, _ = wait(inflight, timeout=POLL_S, return_when=FIRST_COMPLETED)
                for fut in done:
                    task = inflight.pop(fut)
                    if isinstance(fut.exception(), BrokenProcessPool):
                        broken = True
                        for ref in task:
                            _crashed(ctx, ref, alone=ref is solo, suspects=suspects)
                    else:
                        for prepared in fut.result():
                            take(prepared)
                    if any(ref is solo for ref in task):
                        solo = None
                if watchdog is not None and not broken:
                    running = {ref.study_uid for fut, task in inflight.items() if not fut.done() for ref in task}
                    for late in watchdog.overdue(running):
                        _stop(late.pid)
                        stopped[late.study_uid] = late
                    broken = bool(stopped)
            elif not broken:
                break
            if broken:
                for fut, task in inflight.items():
                    if any(ref is solo for ref in task):
                        solo = None
                    if fut.done() and fut.exception() is None:
                        for prepared in fut.result():
                            take(prepared)
                        continue
                    for ref in task:  # the task's results are lost, those of studies done before the stop too
                        if ref.study_uid in stopped:
                            _timed_out(ctx, ref, stopped[ref.study_uid], bound_s or 0.0)
                        elif stopped:
                            requeue.append(ref)  # interrupted by another study's stop: not a suspect
                        else:
                            suspects.append(ref)
                inflight.clear()
                pool.shutdown(wait=True, cancel_futures=True)
                if stopped:
                    log.warning(
                        "stopped a worker over the %g s per-file bound; "
                        "restarting the pool (%d study(ies) resubmitted)",
                        bound_s,
                        len(requeue),
                    )
                else:
                    log.warning(
                        "a worker process died; restarting the pool (%d study(ies) to retry alone)",
                        len(suspects),
                    )
                pool = new_pool()
            while len(ready) >= options.batch_size:
                score(options.batch_size)
            if ready and not inflight and (exhausted or suspects):
                score(len(ready))
        if ready:
            score(len(ready))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if on_cpu and sizing.share is not None:
            log.info(
                "CPU inference: %d torch thread(s) for %.0f %% of the CPU work (inference %.1f s, workers %.1f s)",
                sizing.threads,
                100 * sizing.share,
                sizing.inference_s,
                sizing.worker_s,
            )
        torch.set_num_threads(threads)


def _cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _timed_out(ctx: EngineContext, ref: StudyRef, late: Overdue, bound_s: float) -> None:
    """Dead-letter a study whose worker was stopped on a step over the per-file bound."""
    stage = "materialize" if late.file is None else "decode"
    reason = f"{stage} exceeded {bound_s:g} s on one file (stopped after {late.seconds:.0f} s)"
    ctx.rejected(ref.study_uid, late.file or (ref.locator[0] if ref.locator else None), reason, stage)


def _crashed(ctx: EngineContext, ref: StudyRef, *, alone: bool, suspects: deque[StudyRef]) -> None:
    """A worker died with ``ref`` in flight: retry it alone, or dead-letter it after ``max_attempts``."""
    if not alone:
        suspects.append(ref)
        return
    attempts = ctx.ledger.add_attempt(ref.study_uid)
    if attempts >= ctx.options.max_attempts:
        reason = f"the worker process died while decoding the study ({attempts} attempts)"
        ctx.rejected(ref.study_uid, ref.locator[0] if ref.locator else None, reason, CRASH_STAGE)
    else:
        suspects.appendleft(ref)
