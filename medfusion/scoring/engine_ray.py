"""The scale-out engine: the same job on Ray Data.

::

    from_items(pending refs + report text)
      -> map_batches(preprocess_batch)                 CPU tasks: materialize + decode + preprocess
      -> map_batches(ScorerActor, concurrency=k,       actor pool, the model held by each actor
                     num_gpus=1 when GPUs)             (GPU + AMP when present)
      -> driver: iter_batches -> PartWriter + ledger   exactly-once commits, as with the local engine

Without ``ray_address`` a local Ray is started (``num_cpus = workers + 1``, no dashboard) and shut
down afterwards; with ``ray_address="auto"`` (or ``ray://head:10001``) the job runs on that cluster:
every node needs medfusion installed and the source files (or the DICOMweb server) reachable under
the same paths. Pending studies are sent in chunks of :data:`CHUNK` so the driver's memory stays
bounded.

Worker crashes: Ray retries a failed task ``max_attempts`` times; blocks that still fail are
skipped and their studies stay pending (a re-run retries them; the local engine dead-letters such
studies one by one).

Bounds: the reader's bounds apply in the tasks as in the local engine (file bytes before reading,
inflated bytes of deflated files, declared pixels before decoding), and copies of one instance are
chosen by what decodes (:func:`~medfusion.scoring.engine_local.prepare_study`). The per-file wall-time
bound (``file_timeout_s``) is the local engine's: Ray Data has no per-row time limit.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medfusion.inference import Prediction
from medfusion.ingest.records import Rejection
from medfusion.models.card import ModelCard
from medfusion.processing.sample import Sample
from medfusion.scoring.engine_local import Prepared, record_set_aside
from medfusion.scoring.sources import StudyRef, StudySource

if TYPE_CHECKING:  # job.py imports the engines lazily; the engines need the context type only
    from medfusion.scoring.job import EngineContext

log = logging.getLogger(__name__)

#: Pending studies per Ray dataset.
CHUNK = 4096

_PREPROCESSORS: dict[str, Any] = {}


def preprocess_batch(batch: pd.DataFrame, source: StudySource, model_dir: str) -> pd.DataFrame:
    """Ray task: studies -> serialised samples (:meth:`Sample.to_bytes`, empty when rejected) or rejections."""
    import torch

    from medfusion.inference import load_preprocessor
    from medfusion.scoring.engine_local import prepare_study

    torch.set_num_threads(1)
    if model_dir not in _PREPROCESSORS:
        _PREPROCESSORS[model_dir] = load_preprocessor(model_dir)
    rows = []
    for item in batch.itertuples(index=False):
        # Every column holds strings (see _run_chunk); str() only tells the type checker so.
        ref = StudyRef(str(item.study_uid), tuple(json.loads(str(item.locator))), str(item.report_key) or None)
        prepared = prepare_study(source, _PREPROCESSORS[model_dir], ref, str(item.report_text))
        rows.append(
            {
                "study_uid": prepared.study_uid,
                "sample": prepared.sample.to_bytes() if prepared.sample is not None else b"",
                "error": prepared.reason or "",
                "file": prepared.file or "",
                "stage": prepared.stage or "",
                "set_aside": json.dumps([[r.source, r.reason] for r in prepared.set_aside]),
            }
        )
    return pd.DataFrame(rows)


class ScorerActor:
    """Ray actor: holds the model (on its GPU when it has one) and scores batches of samples.

    Args:
        model_dir: The model folder.
        batch_size: Studies per forward pass.
        device: Inference device (``auto``: the actor's GPU when Ray gave it one).
    """

    def __init__(self, model_dir: str, batch_size: int, device: str = "auto") -> None:
        import torch

        from medfusion.inference import Predictor

        if not torch.cuda.is_available():
            torch.set_num_threads(1)
        self.predictor = Predictor.from_dir(model_dir, device=device, batch_size=batch_size, amp=True)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        n = len(self.predictor.labels)
        ok = [i for i, e in enumerate(batch["error"]) if not e]
        samples = [Sample.from_bytes(batch["sample"].iloc[i]) for i in ok]
        probs = [[float("nan")] * n] * len(batch)
        for i, prediction in zip(ok, self.predictor.score_samples(samples), strict=True):
            probs[i] = [float(p) for p in prediction.probabilities]
        return pd.DataFrame(
            {
                "study_uid": batch["study_uid"],
                "probabilities": probs,
                "error": batch["error"],
                "file": batch["file"],
                "stage": batch["stage"],
                "set_aside": batch["set_aside"],
            }
        )


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
        data_context = ray.data.DataContext.get_current()
        data_context.enable_progress_bars = False
        data_context.max_errored_blocks = -1  # a block that keeps failing is skipped; its studies stay pending
        gpus = int(ray.cluster_resources().get("GPU", 0))
        scorers = options.scorers or max(1, gpus)
        thresholds = np.asarray(ModelCard.load(ctx.model.model_dir).thresholds, dtype=np.float64)
        refs = ctx.ledger.iter_pending()
        ctx.started()
        while chunk := list(itertools.islice(refs, CHUNK)):
            _run_chunk(ctx, chunk, scorers, gpus, thresholds)
    finally:
        if started_here:
            ray.shutdown()


def _run_chunk(ctx: EngineContext, chunk: list[StudyRef], scorers: int, gpus: int, thresholds: np.ndarray) -> None:
    import ray

    options = ctx.options
    items = [
        {
            "study_uid": r.study_uid,
            "locator": json.dumps(list(r.locator)),
            "report_key": r.report_key or "",
            "report_text": ctx.reports.text(r),
        }
        for r in chunk
    ]
    blocks = max(1, min(len(items), options.workers * 4))
    ds: ray.data.Dataset = ray.data.from_items(items, override_num_blocks=blocks)
    with warnings.catch_warnings():
        # Ray 2.60 deprecates remote args without a named replacement for max_retries; Ray Data's
        # default (-1: retry forever) would loop on a study that crashes its worker every time.
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = ds.map_batches(
            preprocess_batch,  # type: ignore[arg-type]  # ray's stub wants a one-argument fn; fn_kwargs fills the rest
            fn_kwargs={"source": ctx.source, "model_dir": str(ctx.model.model_dir)},
            batch_format="pandas",
            batch_size=max(1, options.batch_size // 2),
            compute=ray.data.TaskPoolStrategy(size=options.workers),
            num_cpus=1,
            ray_remote_args_fn=functools.partial(dict, max_retries=options.max_attempts),
        )
    ds = ds.map_batches(
        ScorerActor,
        fn_constructor_kwargs={
            "model_dir": str(ctx.model.model_dir),
            "batch_size": options.batch_size,
            "device": options.device if gpus == 0 else "auto",
        },
        batch_format="pandas",
        batch_size=options.batch_size,
        compute=ray.data.ActorPoolStrategy(size=scorers),
        num_gpus=1 if gpus else 0,
        num_cpus=0 if gpus else 1,
    )
    labels = ctx.labels
    for batch in ds.iter_batches(batch_format="pandas", batch_size=None):
        if not isinstance(batch, pd.DataFrame):  # batch_format="pandas" gives DataFrames
            raise TypeError(f"ray returned a {type(batch).__name__} batch, expected a pandas DataFrame")
        for row in batch.itertuples(index=False):
            study_uid = str(row.study_uid)  # the columns are strings (see preprocess_batch)
            set_aside = [Rejection(source, reason) for source, reason in json.loads(str(row.set_aside))]
            record_set_aside(ctx, Prepared(study_uid, set_aside=set_aside))
            if row.error:
                ctx.rejected(study_uid, str(row.file) or None, str(row.error), str(row.stage) or "decode")
                continue
            probs = np.asarray(row.probabilities, dtype=np.float64)
            prediction = Prediction(
                labels=list(labels),
                probabilities=probs,
                thresholds=thresholds.copy(),
            )
            ctx.scored_prediction(study_uid, prediction)
