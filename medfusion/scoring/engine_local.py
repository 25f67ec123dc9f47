"""The embedded engine: a process pool decodes and preprocesses, the main process runs batched inference.

::

    ledger (pending refs) --submit--> worker processes: materialize + decode + preprocess (CPU)
                 ^  bounded window            | samples ((C, *spatial) tensors + report text)
                 |                            v
          PartWriter <-- rows -- main process: batches of ``batch_size`` -> model (GPU + AMP when present)

At most ``window = batch_size + 2 * workers`` studies are in flight or waiting for inference, so
memory stays bounded whatever the archive size, and the workers keep decoding while the main
process runs a forward pass.

A study whose input is rejected (:class:`~medfusion.errors.InputRejected`) is dead-lettered with the
file and the reason. When a worker process dies (segfault in a codec, out of memory, ``os._exit``)
the pool is rebuilt and the studies that were in flight are retried one at a time; a study that
kills its worker alone ``max_attempts`` times is dead-lettered (stage ``worker-crash``).
"""

from __future__ import annotations

import logging
import multiprocessing
import shutil
import sys
import tempfile
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfusion.errors import InputRejected, MedfusionError
from medfusion.inference import Predictor, Preprocessor, StudyInput
from medfusion.scoring.sources import StudyRef, StudySource

log = logging.getLogger(__name__)

CRASH_STAGE = "worker-crash"


@dataclass
class Prepared:
    """A study after the CPU stage: a sample, or why there is none.

    Attributes:
        study_uid: StudyInstanceUID.
        sample: The model sample (see :meth:`medfusion.inference.Preprocessor.__call__`), or None.
        file: The file that was rejected (None when not file-specific).
        reason: Why the study was rejected, or None.
        stage: ``materialize`` or ``decode`` when rejected.
    """

    study_uid: str
    sample: dict[str, Any] | None = None
    file: str | None = None
    reason: str | None = None
    stage: str | None = None


def prepare_study(source: StudySource, preprocessor: Preprocessor, ref: StudyRef, report_text: str) -> Prepared:
    """Materialize, decode and preprocess one study (worker side, shared by both engines).

    Typed input errors become a rejected :class:`Prepared`; anything else is a bug and propagates.
    """
    from medfusion.training.data import input_rejection

    workdir = Path(tempfile.mkdtemp(prefix="medfusion-study-"))
    stage = "materialize"
    try:
        paths = source.materialize(ref, workdir)
        stage = "decode"
        sample = preprocessor(StudyInput(image_paths=[str(p) for p in paths], report_text=report_text))
        return Prepared(ref.study_uid, sample)
    except (InputRejected, RuntimeError) as err:
        exc = input_rejection(err)
        return Prepared(ref.study_uid, file=exc.source, reason=exc.reason, stage=stage)
    except MedfusionError as exc:
        return Prepared(ref.study_uid, reason=str(exc), stage=stage)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# ------------------------------------------------------------------------------------ worker side

_WORKER: dict[str, Any] = {}


def _init_worker(source: StudySource, model_dir: str) -> None:
    import torch

    from medfusion.privacy import install_log_redaction

    install_log_redaction()  # identifiers this worker reads never reach a log line
    torch.set_num_threads(1)
    _WORKER["source"] = source
    _WORKER["preprocessor"] = Preprocessor.from_dir(model_dir)


def _ready() -> bool:
    return "preprocessor" in _WORKER


def _work(ref: StudyRef, report_text: str) -> Prepared:
    return prepare_study(_WORKER["source"], _WORKER["preprocessor"], ref, report_text)


def _context() -> multiprocessing.context.BaseContext:
    """forkserver on Linux (workers fork from a clean server that has imported medfusion), else spawn."""
    if sys.platform.startswith("linux"):
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["medfusion.inference"])
        return ctx
    return multiprocessing.get_context("spawn")


# -------------------------------------------------------------------------------------- main side


def run_local(ctx: Any) -> None:
    """Score every pending study of ``ctx.ledger`` (an :class:`~medfusion.scoring.job.EngineContext`)."""
    options = ctx.options
    predictor = Predictor.from_dir(
        ctx.model.model_dir,
        device=options.device,
        batch_size=options.batch_size,
        amp=True,
    )
    window = options.batch_size + 2 * options.workers
    mp = _context()

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=options.workers,
            mp_context=mp,
            initializer=_init_worker,
            initargs=(ctx.source, str(ctx.model.model_dir)),
        )

    ready: list[Prepared] = []

    def take(prepared: Prepared) -> None:
        if prepared.sample is None:
            ctx.rejected(
                prepared.study_uid,
                prepared.file,
                prepared.reason or "rejected",
                prepared.stage or "decode",
            )
        else:
            ready.append(prepared)

    def score(n: int) -> None:
        batch, ready[:] = ready[:n], ready[n:]
        for prepared, prediction in zip(batch, predictor.score_samples([p.sample for p in batch])):
            ctx.scored_prediction(prepared.study_uid, prediction)

    refs = ctx.ledger.iter_pending()
    inflight: dict[Future, StudyRef] = {}
    requeue: deque[StudyRef] = deque()  # never started (the pool broke while submitting)
    suspects: deque[StudyRef] = deque()  # in flight when a worker died: retried one at a time
    solo: StudyRef | None = None  # the suspect running alone, if any
    exhausted = False
    pool = new_pool()

    def submit(ref: StudyRef) -> bool:
        try:
            inflight[pool.submit(_work, ref, ctx.reports.text(ref))] = ref
            return True
        except BrokenProcessPool:
            return False

    try:
        # Start every worker before timing starts (process start-up is not throughput).
        for fut in [pool.submit(_ready) for _ in range(options.workers)]:
            fut.result()
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
                    if not submit(solo):
                        suspects.appendleft(solo)
                        solo, broken = None, True
            else:
                while len(inflight) + len(ready) < window:
                    ref = requeue.popleft() if requeue else (None if exhausted else next(refs, None))
                    if ref is None:
                        exhausted = True
                        break
                    if not submit(ref):
                        requeue.appendleft(ref)
                        broken = True
                        break
            if inflight:
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for fut in done:
                    ref = inflight.pop(fut)
                    if isinstance(fut.exception(), BrokenProcessPool):
                        broken = True
                        _crashed(ctx, ref, alone=ref is solo, suspects=suspects)
                    else:
                        take(fut.result())
                    if ref is solo:
                        solo = None
            elif not broken:
                break
            if broken:
                for fut, ref in inflight.items():
                    if fut.done() and fut.exception() is None:
                        take(fut.result())
                    else:
                        suspects.append(ref)
                inflight.clear()
                pool.shutdown(wait=True, cancel_futures=True)
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


def _crashed(ctx: Any, ref: StudyRef, *, alone: bool, suspects: deque[StudyRef]) -> None:
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
