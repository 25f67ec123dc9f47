"""The scale-out engine: the same job on Ray Data, one dataset and one scorer pool per job.

::

    driver thread: ledger.iter_pending() in windows --put--> _PendingFeed actor (at most FEED_AHEAD windows)
                                                                  | take (one window per read task)
    read_datasource(_FeedDatasource)  ------------------------- <-+
      -> map_batches(preprocess_batch)                 CPU tasks: materialize + decode + preprocess,
                                                       samples out as numpy columns (image (B, C, *spatial))
      -> map_batches(ScorerActor, ActorPoolStrategy)   one actor pool for the whole job, each actor loads
                                                       the model once (GPU + AMP when present)
      -> driver: iter_batches (bounded prefetch) -> PartWriter + ledger   exactly-once commits, as local

The driver never holds the pending list: a background thread streams pending refs from its own
ledger connection (it only reads), :data:`WINDOW` studies at a time, into a small feed actor whose queue
holds at most :data:`FEED_AHEAD` windows; each of the dataset's ``ceil(pending / WINDOW)`` read tasks
takes the next window. Ray Data's streaming executor bounds what is in flight between stages and
``iter_batches`` prefetches a bounded number of result blocks, so the driver's memory does not grow
with the archive.

Without ``ray_address`` a local Ray is started (``num_cpus = workers + 1``, no dashboard) and shut
down afterwards; with ``ray_address="auto"`` (or ``ray://head:10001``) the job runs on that cluster:
every node needs medfusion installed and the source files (or the DICOMweb server) reachable under
the same paths.

Worker crashes: Ray retries a failed task ``max_attempts`` times; blocks that still fail are
skipped and their studies stay pending (a re-run retries them; the local engine dead-letters such
studies one by one).

Bounds: the reader's bounds apply in the tasks as in the local engine (file bytes before reading,
inflated bytes of deflated files, declared pixels before decoding), and copies of one instance are
chosen by what decodes (:func:`~medfusion.scoring.engine_local.prepare_study`). The per-file wall-time
bound (``file_timeout_s``) is the local engine's: Ray Data has no per-row time limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import threading
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from medfusion.inference import Prediction
from medfusion.ingest.records import Rejection
from medfusion.models.card import ModelCard
from medfusion.scoring.engine_local import Prepared, record_set_aside
from medfusion.scoring.sources import StudyRef, StudySource

if TYPE_CHECKING:  # job.py imports the engines lazily; the engines need the context type only
    import pyarrow as pa

    from medfusion.processing.sample import Sample
    from medfusion.scoring.job import EngineContext

log = logging.getLogger(__name__)

#: Pending studies per read task (window of the ledger handed to the dataset at a time).
WINDOW = 256
#: Windows queued in the feed actor ahead of the read tasks.
FEED_AHEAD = 4
#: Result blocks ``iter_batches`` fetches ahead of the driver.
PREFETCH_BATCHES = 2
#: Seconds between checks of the stop flag while the feeder waits for room in the feed.
_FEED_POLL_S = 1.0

_REF_COLUMNS = ("study_uid", "locator", "report_key", "report_text")
_PREPROCESSORS: dict[str, Any] = {}


# ------------------------------------------------------------------------------------ the feed


class _PendingFeed:
    """Ray actor (async): a bounded queue of windows of pending studies, the driver in, read tasks out."""

    def __init__(self, ahead: int) -> None:
        self.queue: asyncio.Queue[pa.Table | None] = asyncio.Queue(maxsize=ahead)

    async def put(self, window: pa.Table | None) -> None:
        """Queue a window (waits for room); None closes the feed."""
        await self.queue.put(window)

    async def take(self) -> pa.Table | None:
        """The next window, or None once the feed is closed and drained."""
        window = await self.queue.get()
        if window is None:
            await self.queue.put(None)  # every later take sees the end too
        return window


def _empty_window() -> pa.Table:
    import pyarrow as pa

    return pa.table({name: pa.array([], type=pa.string()) for name in _REF_COLUMNS})


def _read_window(feed: Any) -> list[pa.Table]:
    """Read task body: the next window of pending studies (empty once the feed is drained)."""
    import ray

    window = ray.get(feed.take.remote())
    return [window if window is not None else _empty_window()]


def _feed_datasource(feed: Any, windows: int) -> Any:
    """A :class:`ray.data.Datasource` of ``windows`` read tasks, each taking one window from ``feed``."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class _FeedDatasource(Datasource):
        def get_name(self) -> str:
            return "PendingStudies"

        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, *args: Any, **kwargs: Any) -> list[ReadTask]:
            meta = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
            return [ReadTask(functools.partial(_read_window, feed), meta) for _ in range(windows)]

    return _FeedDatasource()


def _window_table(ctx: EngineContext, refs: list[StudyRef]) -> pa.Table:
    import pyarrow as pa

    return pa.table(
        {
            "study_uid": [r.study_uid for r in refs],
            "locator": [json.dumps(list(r.locator)) for r in refs],
            "report_key": [r.report_key or "" for r in refs],
            "report_text": [ctx.reports.text(r) for r in refs],
        }
    )


class _Feeder(threading.Thread):
    """Driver thread: pending refs from its own ledger connection, :data:`WINDOW` at a time, into the feed."""

    def __init__(self, ctx: EngineContext, feed: Any) -> None:
        super().__init__(name="medfusion-ray-feeder", daemon=True)
        self.ctx, self.feed = ctx, feed
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.fed = 0

    def run(self) -> None:
        import ray

        from medfusion.scoring.ledger import Ledger

        try:
            with Ledger(self.ctx.ledger.out_dir) as reader:  # sqlite connections stay in their thread
                refs = reader.iter_pending()
                while not self.stop.is_set() and (window := list(itertools.islice(refs, WINDOW))):
                    pending = self.feed.put.remote(_window_table(self.ctx, window))
                    while not self.stop.is_set():
                        ready, _ = ray.wait([pending], timeout=_FEED_POLL_S)
                        if ready:
                            ray.get(pending)
                            break
                    self.fed += len(window)
        except BaseException as exc:  # noqa: BLE001  (re-raised in the driver's thread)
            self.error = exc
        finally:
            with contextlib.suppress(Exception):  # Ray shut down under us: nothing left to close
                self.feed.put.remote(None)


# ------------------------------------------------------------------------------- preprocessing


def preprocess_batch(
    batch: dict[str, np.ndarray], source: StudySource, model_dir: str, n_labels: int, work_root: str | None = None
) -> dict[str, np.ndarray]:
    """Ray task: studies -> samples as numpy columns (zeros and ``ok = False`` where rejected).

    A study's retrieved files go to a folder inside ``work_root``, the job's work folder
    (:mod:`medfusion.scoring.workdir`; the task's own temporary directory on a node without it).

    Returns:
        ``study_uid``, ``ok`` (B,) bool, ``image`` (B, C, *spatial) float32, ``image_present`` (B,) bool,
        ``input_ids`` (B, max_tokens) int64 (zero-padded), ``n_tokens`` (B,) int64, ``report``,
        ``label`` (B, L) float32, and why a study was rejected: ``error``, ``file``, ``stage``,
        ``set_aside`` (JSON list of ``[file, reason]``).
    """
    import torch

    from medfusion.inference import load_preprocessor
    from medfusion.processes import retain_freed_memory
    from medfusion.scoring.engine_local import prepare_study

    torch.set_num_threads(1)
    retain_freed_memory()  # once per worker process: see medfusion.processes
    if model_dir not in _PREPROCESSORS:
        _PREPROCESSORS[model_dir] = load_preprocessor(model_dir)
    preprocessor = _PREPROCESSORS[model_dir]
    prepared = []
    for uid, locator, key, text in zip(
        batch["study_uid"], batch["locator"], batch["report_key"], batch["report_text"], strict=True
    ):
        ref = StudyRef(str(uid), tuple(json.loads(str(locator))), str(key) or None)
        prepared.append(prepare_study(source, preprocessor, ref, str(text), work_root=work_root))
    return _sample_columns(prepared, tuple(preprocessor.spec.image_shape), preprocessor.spec.max_tokens, n_labels)


def _sample_columns(
    prepared: list[Prepared], image_shape: tuple[int, ...], max_tokens: int, labels: int
) -> dict[str, np.ndarray]:
    n = len(prepared)
    samples = [p.sample for p in prepared]
    image = np.zeros((n, *image_shape), dtype=np.float32)  # (B, C, *spatial)
    input_ids = np.zeros((n, max_tokens), dtype=np.int64)  # (B, T)
    n_tokens = np.zeros(n, dtype=np.int64)
    label = np.full((n, labels), np.nan, dtype=np.float32)  # (B, L)
    for b, sample in enumerate(samples):
        if sample is None:
            continue
        if sample.image is not None:
            image[b] = sample.image.numpy()
        ids = sample.input_ids.numpy()
        input_ids[b, : len(ids)] = ids
        n_tokens[b] = len(ids)
        label[b] = sample.label.numpy()
    return {
        "study_uid": np.array([p.study_uid for p in prepared], dtype=object),
        "ok": np.array([s is not None for s in samples], dtype=bool),
        "image": image,
        "image_present": np.array([s is not None and s.image is not None for s in samples], dtype=bool),
        "input_ids": input_ids,
        "n_tokens": n_tokens,
        "report": np.array([s.report if s is not None else "" for s in samples], dtype=object),
        "label": label,
        "error": np.array([(p.reason or "rejected") if p.sample is None else "" for p in prepared], dtype=object),
        "file": np.array([p.file or "" for p in prepared], dtype=object),
        "stage": np.array([p.stage or "" for p in prepared], dtype=object),
        "set_aside": np.array(
            [json.dumps([[r.source, r.reason] for r in p.set_aside]) for p in prepared], dtype=object
        ),
    }


def samples_from_columns(batch: dict[str, np.ndarray]) -> list[Sample | None]:
    """Inverse of the sample columns of :func:`preprocess_batch` (None for a rejected study)."""
    import torch

    from medfusion.processing.sample import Sample

    out: list[Sample | None] = []
    for b, ok in enumerate(batch["ok"]):
        if not ok:
            out.append(None)
            continue
        out.append(
            Sample(
                image=torch.from_numpy(np.array(batch["image"][b], dtype=np.float32))
                if batch["image_present"][b]
                else None,
                input_ids=torch.from_numpy(
                    np.array(batch["input_ids"][b][: int(batch["n_tokens"][b])], dtype=np.int64)
                ),
                report=str(batch["report"][b]),
                label=torch.from_numpy(np.array(batch["label"][b], dtype=np.float32)),
                study_uid=str(batch["study_uid"][b]),
            )
        )
    return out


# ------------------------------------------------------------------------------------- scoring


class ScorerActor:
    """Ray actor: holds the model (on its GPU when it has one) and scores batches of samples.

    One pool of these serves the whole job: the model is loaded once per actor.

    Args:
        model_dir: The model folder.
        batch_size: Studies per forward pass.
        device: Inference device (``auto``: the actor's GPU when Ray gave it one).
        amp: Mixed precision of the forward passes (:mod:`medfusion.precision`).
    """

    def __init__(self, model_dir: str, batch_size: int, device: str = "auto", amp: str = "auto") -> None:
        import torch

        from medfusion.inference import Predictor

        if not torch.cuda.is_available():
            torch.set_num_threads(1)
        self.predictor = Predictor.from_dir(model_dir, device=device, batch_size=batch_size, amp=amp)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        samples = samples_from_columns(batch)
        ok = [i for i, s in enumerate(samples) if s is not None]
        probs = np.full((len(samples), len(self.predictor.labels)), np.nan, dtype=np.float64)  # (B, L)
        predictions = self.predictor.score_samples([s for s in samples if s is not None])
        for i, prediction in zip(ok, predictions, strict=True):
            probs[i] = np.asarray(prediction.probabilities, dtype=np.float64)
        return {
            "study_uid": batch["study_uid"],
            "probabilities": probs,
            "error": batch["error"],
            "file": batch["file"],
            "stage": batch["stage"],
            "set_aside": batch["set_aside"],
        }


def run_ray(ctx: EngineContext) -> None:
    """Score every pending study of ``ctx.ledger`` on Ray Data (see the module docstring)."""
    import ray
    import torch

    options = ctx.options
    started_here = False
    if not ray.is_initialized():
        if options.ray_address:
            ray.init(address=options.ray_address, log_to_driver=False)
        else:
            ray.init(
                num_cpus=options.workers + 1,
                num_gpus=torch.cuda.device_count(),
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        started_here = True
    try:
        pending = ctx.ledger.count("pending")
        if pending == 0:
            ctx.started()
            return
        data_context = ray.data.DataContext.get_current()
        data_context.enable_progress_bars = False
        data_context.max_errored_blocks = -1  # a block that keeps failing is skipped; its studies stay pending
        gpus = int(ray.cluster_resources().get("GPU", 0))
        scorers = options.scorers or max(1, gpus)
        thresholds = np.asarray(ModelCard.load(ctx.model.model_dir).thresholds, dtype=np.float64)
        feed = ray.remote(num_cpus=0)(_PendingFeed).remote(FEED_AHEAD)
        feeder = _Feeder(ctx, feed)
        ds = _dataset(ctx, feed, -(-pending // WINDOW), scorers, gpus)
        ctx.started()
        feeder.start()
        try:
            for batch in _iter_results(ds):
                _commit_batch(ctx, batch, thresholds)
        finally:
            feeder.stop.set()
            feeder.join()
        if feeder.error is not None:
            raise feeder.error
    finally:
        if started_here:
            ray.shutdown()


def _dataset(ctx: EngineContext, feed: Any, windows: int, scorers: int, gpus: int) -> Any:
    """The job's one dataset: feed windows -> preprocess tasks -> one pool of scorer actors."""
    import ray

    options = ctx.options
    ds = ray.data.read_datasource(_feed_datasource(feed, windows), override_num_blocks=windows)
    with warnings.catch_warnings():
        # Ray 2.60 deprecates remote args without a named replacement for max_retries; Ray Data's
        # default (-1: retry forever) would loop on a study that crashes its worker every time.
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = ds.map_batches(
            preprocess_batch,
            fn_kwargs={
                "source": ctx.source,
                "model_dir": str(ctx.model.model_dir),
                "n_labels": len(ctx.labels),
                "work_root": ctx.work_root,
            },
            batch_format="numpy",
            batch_size=max(1, options.batch_size // 2),
            compute=ray.data.TaskPoolStrategy(size=options.workers),
            num_cpus=1,
            ray_remote_args_fn=functools.partial(dict, max_retries=options.max_attempts),
        )
    return ds.map_batches(
        ScorerActor,
        fn_constructor_kwargs={
            "model_dir": str(ctx.model.model_dir),
            "batch_size": options.batch_size,
            "device": options.device if gpus == 0 else "auto",
            "amp": options.amp,
        },
        batch_format="numpy",
        batch_size=options.batch_size,
        compute=ray.data.ActorPoolStrategy(size=scorers),
        num_gpus=1 if gpus else 0,
        num_cpus=0 if gpus else 1,
    )


def _iter_results(ds: Any) -> Iterator[dict[str, np.ndarray]]:
    for batch in ds.iter_batches(batch_format="numpy", batch_size=None, prefetch_batches=PREFETCH_BATCHES):
        if not isinstance(batch, dict):  # batch_format="numpy" gives dicts of arrays
            raise TypeError(f"ray returned a {type(batch).__name__} batch, expected a dict of numpy arrays")
        yield batch


def _commit_batch(ctx: EngineContext, batch: dict[str, np.ndarray], thresholds: np.ndarray) -> None:
    """Dead-letter or hand to the writer every study of one result block (driver side)."""
    labels = list(ctx.labels)
    for b, uid in enumerate(batch["study_uid"]):
        study_uid = str(uid)
        set_aside = [Rejection(source, reason) for source, reason in json.loads(str(batch["set_aside"][b]))]
        record_set_aside(ctx, Prepared(study_uid, set_aside=set_aside))
        error = str(batch["error"][b])
        if error:
            ctx.rejected(study_uid, str(batch["file"][b]) or None, error, str(batch["stage"][b]) or "decode")
            continue
        prediction = Prediction(
            labels=labels,
            probabilities=np.asarray(batch["probabilities"][b], dtype=np.float64),
            thresholds=thresholds.copy(),
        )
        ctx.scored_prediction(study_uid, prediction)
