"""The training loop: multi-label BCE, AdamW, warmup + cosine, AMP, early stopping, calibration.

:func:`train` runs one configuration on records already split into ``train``/``val``/``test``:

1. seeds python, numpy and torch (and the DataLoader's shuffling and workers) from ``training.seed``;
2. prepares the text encoder (:mod:`medfusion.training.text_setup`) and builds the model;
3. trains with ``BCEWithLogitsLoss`` (unknown labels masked out, ``pos_weight`` = neg/pos per label
   from the train split when ``training.pos_weight: auto``), AdamW, linear warmup then cosine decay,
   gradient accumulation, AMP (:mod:`medfusion.precision`; ``auto``: bf16 on CUDA when supported, else
   fp16 with a GradScaler; off on CPU), modality dropout, and each modality head's own loss weighted by
   ``fusion.aux_loss_weight`` (fusions with two modalities);
4. keeps the epoch with the best validation macro AUROC (``checkpoints/best.safetensors``) and
   stops after ``early_stopping_patience`` epochs without improvement; every epoch is committed to
   ``checkpoints/`` (:mod:`medfusion.training.checkpoint`) so that ``resume=True`` continues a
   killed run from its last finished epoch;
5. with ``fusion.stacking`` (late, gated, hybrid): fits per-label weights over the fused, image-only and
   text-only logits on validation (:mod:`medfusion.models.stacking`; early stopping then follows the
   validation score of the candidate stacking would choose per label, :func:`stacked_val_score`), so the
   model falls back to one modality where fusion does not help;
6. fits per-label calibration and tunes per-label F1 thresholds on validation, scores the test split, and
   saves the model folder (:func:`medfusion.models.model.save_model_dir`) to ``<out_dir>/model``.

Under ``torchrun`` (``medfusion train --nproc N``) every process runs :func:`train` on its slice of each
global batch, the model wrapped in ``DistributedDataParallel`` with BatchNorm synchronised; predictions are
gathered before metrics and rank 0 alone writes checkpoints and the model
(:mod:`medfusion.training.distributed`).

On CPU, the same seed and configuration give identical results. On CUDA a few kernels are not
deterministic (PyTorch documents which), so figures may differ in the last digits.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_model
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from medfusion.config import Config
from medfusion.errors import MedfusionError
from medfusion.ingest.records import Rejection
from medfusion.metrics import bootstrap_ci, evaluate, tune_thresholds
from medfusion.models.calibration import Calibration, fit_calibration
from medfusion.models.card import ModelCard, Stacking
from medfusion.models.fusion import IMAGE, TEXT
from medfusion.models.model import MedFusionModel, build_model, load_pretrained, resolve_device, save_model_dir
from medfusion.models.stacking import CANDIDATES, fit_stacking
from medfusion.precision import resolve_amp
from medfusion.processing.preprocessor import Preprocessor, report_text
from medfusion.processing.sample import Collator
from medfusion.training import distributed
from medfusion.training.checkpoint import BEST_FILE, EpochCheckpoints, checkpoint_state, has_checkpoint
from medfusion.training.data import StudyDataset
from medfusion.training.decoded_cache import CacheStats
from medfusion.training.distributed import GlobalBatchSampler, ShardSampler, drop_last_global, gather_rows
from medfusion.training.sync_norm import synchronise_batchnorm
from medfusion.training.text_setup import prepare_text_encoder, reads_text, reuse_text_encoder, warn_if_truncated

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: An epoch must beat the best validation score by more than this to count as an improvement.
MIN_DELTA = 1e-4


class Callback(Protocol):
    """Receives training events; implement either method (the MLflow tracker plugs in here)."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None: ...

    def on_train_end(self, result: TrainResult) -> None: ...


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        model_dir: The saved model folder (weights, labels, thresholds, calibration, preprocessing).
        best_epoch: 1-based epoch whose weights were kept.
        history: One dict per epoch: ``epoch``, ``train_loss``, ``val_loss``, ``lr``, ``epoch_seconds``
            and ``val_<metric>`` (uncalibrated, 0.5 thresholds).
        val_metrics: Validation metrics of the best epoch, calibrated, tuned thresholds.
        test_metrics: Test metrics, same treatment; empty when there is no test split.
        test_ci: Test metric -> 95 % patient-level bootstrap interval ``(low, high)``
            (:func:`~medfusion.metrics.bootstrap_ci`, seeded with ``training.seed``).
        thresholds: Per-label decision thresholds (maximise validation F1).
        calibration: Per-label Platt scaling fitted on validation after stacking.
        train_seconds: Wall time of the epochs (setup and calibration excluded).
        test_probabilities: (N_test, L) calibrated test probabilities.
        test_targets: (N_test, L) test targets, NaN = unknown.
        labels: Label names, in output order.
        skipped: Split -> label -> why the label has no AUROC there.
        rejected: Images that could not be read (those studies were used without image).
        stopped_early: True when patience ran out before ``training.epochs``.
        data_cache: What the decoded-image cache (``data.cache_dir``) held at the start; None without one.
        test_study_uids: StudyInstanceUIDs of the rows of ``test_probabilities`` (in clear: pseudonymise
            before anything leaves the process, see :func:`medfusion.tracking.runs.log_test_predictions`).
        stacking: The per-label weights over (fused, image, text) logits and their validation evidence
            (``fusion.stacking``); None when the model has no stacking.
        candidate_test_auroc_by_label: With stacking, the test AUROC per label of each candidate alone
            (``fused``: the fusion head without the fallback, ``image``, ``text``) and of the model
            (``stacked``): candidate -> (L,) (None: the label has one class in test).
    """

    model_dir: Path
    best_epoch: int
    history: list[dict[str, float]]
    val_metrics: dict[str, float]
    test_metrics: dict[str, float]
    thresholds: list[float]
    calibration: Calibration
    train_seconds: float
    test_probabilities: np.ndarray
    test_targets: np.ndarray
    labels: list[str]
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)
    rejected: list[Rejection] = field(default_factory=list)
    stopped_early: bool = False
    data_cache: CacheStats | None = None
    test_ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    test_study_uids: list[str] = field(default_factory=list)
    stacking: Stacking | None = None
    candidate_test_auroc_by_label: dict[str, tuple[float | None, ...]] = field(default_factory=dict)

    @property
    def candidate_test_auroc(self) -> dict[str, float]:
        """Candidate -> its test macro AUROC (the mean of :attr:`candidate_test_auroc_by_label`)."""
        return {k: _mean_auroc(v) for k, v in self.candidate_test_auroc_by_label.items()}


def patients(records: list[dict]) -> list[str]:
    """The patient of each record (``meta.patient_pseudonym``), for patient-level resampling.

    A record without one is its own patient (records built outside a manifest).
    """
    out = []
    for i, record in enumerate(records):
        meta = record.get("meta") or {}
        out.append(str(meta.get("patient_pseudonym") or f"study:{meta.get('study_uid') or i}"))
    return out


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy and torch (all devices); make cuDNN deterministic."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def pos_weights(records: Sequence[dict[str, Any]], labels: Sequence[str]) -> torch.Tensor:
    """(L,) negatives / positives per label over known train targets; 1.0 where a label has no positive."""
    y = np.stack([np.asarray(r["label"], dtype=np.float64) for r in records])  # (N, L)
    pos, neg = np.nansum(y == 1, axis=0), np.nansum(y == 0, axis=0)
    weights = np.where(pos > 0, neg / np.maximum(pos, 1), 1.0)
    for name, p in zip(labels, pos, strict=True):
        if p == 0:
            log.warning("label %s has no positive training example; pos_weight 1.0", name)
    return torch.as_tensor(weights, dtype=torch.float32)


def masked_bce(
    logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None, *, global_batch: bool = False
) -> torch.Tensor:
    """Mean ``BCEWithLogits`` over known targets (NaN = unknown, excluded).

    ``global_batch``: divide by the mean over ranks of the known count (:func:`distributed.global_count`),
    so that DDP's average of the ranks' losses is the mean over the whole global batch.
    """
    known = ~torch.isnan(targets)
    loss = F.binary_cross_entropy_with_logits(
        logits.float(), torch.nan_to_num(targets), pos_weight=pos_weight, reduction="none"
    )  # (B, L)
    count = known.sum().float()
    if global_batch:
        count = distributed.global_count(count)
    return (loss * known).sum() / count.clamp(min=1)


def modality_loss(
    modality_logits: dict[str, torch.Tensor],
    batch: dict[str, torch.Tensor],
    pos_weight: torch.Tensor | None,
    *,
    global_batch: bool = False,
) -> torch.Tensor:
    """Mean over modalities of each modality head's :func:`masked_bce`, on the samples that have the modality.

    Trains each modality's own logits directly (deep supervision), so they mean something alone (for
    explanations and for studies missing the other modality) and each branch learns at its own pace.
    """
    losses = []
    for m, logits in modality_logits.items():
        present = batch[f"{m}_present"][:, None]  # (B, 1)
        targets = torch.where(present, batch["label"], torch.full_like(batch["label"], float("nan")))
        losses.append(masked_bce(logits, targets, pos_weight, global_batch=global_batch))
    return torch.stack(losses).mean() if losses else torch.zeros(())


def modality_dropout(
    batch: dict[str, torch.Tensor], p: float, generator: torch.Generator, span: tuple[int, int, int] | None = None
) -> dict[str, torch.Tensor]:
    """Hide one modality (image or text, even odds) of samples that have both, each with chance ``p``.

    ``span`` ``(lo, hi, n)``: the batch is rows ``lo:hi`` of a global batch of ``n`` (distributed); the
    draws are made for the global batch and sliced, as one process would draw them.
    """
    both = batch["image_present"] & batch["text_present"]
    lo, hi, n = span if span is not None else (0, both.shape[0], both.shape[0])
    drop = (torch.rand((n,), generator=generator)[lo:hi] < p) & both
    hide_image = torch.rand((n,), generator=generator)[lo:hi] < 0.5
    out = dict(batch)
    out["image_present"] = batch["image_present"] & ~(drop & hide_image)
    out["text_present"] = batch["text_present"] & ~(drop & ~hide_image)
    return out


def warmup_cosine(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """LR multiplier: linear warmup over ``warmup_fraction`` of the steps, then cosine decay to 0."""
    warmup = round(total_steps * warmup_fraction)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def param_groups(model: MedFusionModel, config: Config) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases and norms; ``text_lr`` for the text transformer if set."""
    t = config.training
    text_ids = set()
    if model.text_encoder is not None and t.text_lr is not None:
        text_ids = {id(p) for p in model.text_encoder.transformer.parameters()}
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        lr = t.text_lr if id(p) in text_ids and t.text_lr is not None else t.lr
        decay = t.weight_decay if p.ndim > 1 else 0.0
        groups.setdefault((lr, decay), []).append(p)
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def predict_logits(
    model: MedFusionModel, loader: DataLoader, device: torch.device, amp_dtype: torch.dtype | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(logits (N, L), targets (N, L))`` over a loader, in eval mode."""
    model.eval()
    logits, targets = [], []
    for batch in loader:
        batch = _to(batch, device)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            out = model(batch)
        logits.append(out.logits.float().cpu())
        targets.append(batch["label"].cpu())
    if not logits:  # an empty shard (distributed, fewer studies than processes)
        return np.zeros((0, 0)), np.zeros((0, 0))
    return torch.cat(logits).double().numpy(), torch.cat(targets).double().numpy()


def gathered_logits(
    model: MedFusionModel, loader: DataLoader, device: torch.device, amp_dtype: torch.dtype | None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`predict_logits` over every rank's shard, gathered in study order (the same on every rank)."""
    logits, targets = predict_logits(model, loader, device, amp_dtype)
    return gather_rows(logits), gather_rows(targets)


def gathered_candidates(
    model: MedFusionModel, loader: DataLoader, device: torch.device, amp_dtype: torch.dtype | None
) -> Candidates:
    """:func:`predict_candidates` over every rank's shard, gathered in study order."""
    c = predict_candidates(model, loader, device, amp_dtype)
    if not distributed.current().active:
        return c
    parts = [p for p in distributed.all_gather(c) if p.fused.shape[0] > 0]  # one collective on every rank
    return Candidates(
        fused=np.concatenate([p.fused for p in parts]),
        modality={m: np.concatenate([p.modality[m] for p in parts]) for m in parts[0].modality},
        present={m: np.concatenate([p.present[m] for p in parts]) for m in parts[0].present},
        targets=np.concatenate([p.targets for p in parts]),
    )


@dataclass
class Candidates:
    """Validation (or test) outputs of every stacking candidate.

    Attributes:
        fused: (N, L) fused logits.
        modality: Modality -> (N, L) its own logits (empty for ``concat`` and single-modality models).
        present: Modality -> (N,) bool.
        targets: (N, L) targets, NaN unknown.
    """

    fused: np.ndarray
    modality: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    targets: np.ndarray


@torch.no_grad()
def predict_candidates(
    model: MedFusionModel, loader: DataLoader, device: torch.device, amp_dtype: torch.dtype | None
) -> Candidates:
    """The fused logits and each modality's own logits over a loader, in eval mode (stacking ignored)."""
    model.eval()
    fused, targets = [], []
    modality: dict[str, list[torch.Tensor]] = {}
    present: dict[str, list[torch.Tensor]] = {}
    for batch in loader:
        batch = _to(batch, device)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            out = model(batch)
        fused.append((out.logits if out.fused_logits is None else out.fused_logits).float().cpu())
        targets.append(batch["label"].cpu())
        for m, v in out.modality_logits.items():
            modality.setdefault(m, []).append(v.float().cpu())
            present.setdefault(m, []).append(batch[f"{m}_present"].bool().cpu())
    if not fused:  # an empty shard (distributed): modality heads are learned from the other ranks' rows
        return Candidates(np.zeros((0, 0)), {}, {}, np.zeros((0, 0)))
    return Candidates(
        fused=torch.cat(fused).double().numpy(),
        modality={m: torch.cat(v).double().numpy() for m, v in modality.items()},
        present={m: torch.cat(v).numpy() for m, v in present.items()},
        targets=torch.cat(targets).double().numpy(),
    )


def stacked_val_score(c: Candidates, labels: Sequence[str], prior: float) -> float:
    """Minus the mean over labels of the validation score of the candidate stacking would choose (NaN:
    no label scorable). Higher is better; it is the early-stopping score of a stacked model.

    Stacking with one-hot weights (one candidate per label, by its one-standard-error rule) is fitted on
    ``c`` and each label contributes the chosen candidate's Platt-rescaled cross-entropy (plus the
    prior): what the stacked model can reach, scored the way stacking chooses. A label no candidate
    informs scores about its base-rate entropy at every epoch (the Platt slope of noise is about 0), so
    the epoch is chosen by the labels that carry signal. The earlier score, the mean of each label's
    *best* candidate AUROC, was the maximum of three noisy AUROCs on uninformative labels and picked
    epochs by their noise: on the demo cohort with pure-noise text (480 studies), 7 of 10 gated and
    hybrid runs kept epoch 1, with an under-trained image branch (cardiomegaly 0.93-0.97 against 0.998
    for the image-only model).
    """
    st = fit_stacking(c.fused, c.modality, c.present, c.targets, labels, prior=prior, step=1.0)
    scored = [v for v in st.val_loss.get("stacked", ()) if v is not None]
    return -float(np.mean(scored)) if scored else float("nan")


def _mean_auroc(values: Sequence[float | None]) -> float:
    scored = [v for v in values if v is not None]
    return float(np.mean(scored)) if scored else float("nan")


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32  # differs per worker and per epoch, fixed by the loader's generator
    random.seed(seed)
    np.random.seed(seed)
    info = torch.utils.data.get_worker_info()
    preprocessor = getattr(info.dataset, "preprocessor", None) if info is not None else None
    if preprocessor is not None:
        preprocessor.set_random_state(seed)


def drop_singleton_batch(n_samples: int, batch_size: int) -> bool:
    """Whether the training loader drops its trailing batch: only when that batch would hold one sample.

    BatchNorm in train mode cannot normalise a batch of one (``Expected more than 1 value per channel``)
    and a one-sample step is the noisiest of the epoch. Since the training loader shuffles, the sample
    left out differs from one epoch to the next, so every study is still seen; any other remainder (2 or
    more) is kept. A split of one study, or ``batch_size`` 1, has no other batch to fall back on and is
    left as it is. Validation and test loaders never drop (they run in eval mode and must score every study).

    Args:
        n_samples: Studies in the training split.
        batch_size: The configured batch size.
    """
    return drop_last_global(n_samples, batch_size, 1)  # the one-process case of the distributed rule


def _loaders(
    card: ModelCard,
    config: Config,
    records: dict[str, list[dict]],
    tokenizer: Any,
    device: torch.device,
    *,
    images: bool = True,
) -> tuple[dict[str, DataLoader], list[Rejection], CacheStats]:
    d, t = config.data, config.training
    info = distributed.current()
    collate = Collator.for_tokenizer(tokenizer, card.preprocessing.image_shape)
    loaders, rejected = {}, []
    cache_stats: list[CacheStats] = []
    for split in SPLITS:
        if not records.get(split):
            continue
        train = split == "train"
        preprocessor = Preprocessor(  # text_only models never decode images
            card.preprocessing, tokenizer, len(card.labels), uses_image=images, train=train, seed=t.seed
        )
        dataset = StudyDataset(records[split], preprocessor, cache_dir=d.cache_dir, augment_seed=t.seed)
        rejected += dataset.rejected
        if dataset.disk_cache is not None:
            cache_stats.append(dataset.disk_cache.stats)
        generator = torch.Generator().manual_seed(t.seed)
        workers: dict[str, Any] = {}
        if d.num_workers > 0:
            workers = {"persistent_workers": True, "prefetch_factor": d.prefetch_factor}
        if train:  # the global batch's slice of this rank, keyed (epoch, study) for seeded augmentation
            sampling: dict[str, Any] = {
                "batch_sampler": GlobalBatchSampler(
                    len(dataset),
                    t.batch_size,
                    generator,
                    rank=info.rank,
                    world_size=info.world_size,
                    drop_last=drop_last_global(len(dataset), t.batch_size, info.world_size),
                )
            }
        elif info.active:  # every study once, contiguous shards: gathered in study order
            sampling = {"batch_size": t.batch_size, "sampler": ShardSampler(len(dataset), info.rank, info.world_size)}
        else:
            sampling = {"batch_size": t.batch_size}
        loaders[split] = DataLoader(
            dataset,
            collate_fn=collate,
            num_workers=d.num_workers,
            generator=generator,
            worker_init_fn=_worker_init,
            pin_memory=device.type == "cuda",
            **sampling,
            **workers,
        )
    return (
        loaders,
        rejected,
        CacheStats(
            sum(c.hits for c in cache_stats), sum(c.misses for c in cache_stats), sum(c.uncached for c in cache_stats)
        ),
    )


def _encoders(config: Config, model: torch.nn.Module) -> str:
    """The encoders the model has: ``resnet18 image encoder, tiny BERT text encoder`` or
    ``densenet121 image encoder, text encoder /models/BiomedBERT`` (the folder or hub id as configured)."""
    parts = []
    if getattr(model, "image_encoder", None) is not None:
        parts.append(f"{config.image_encoder.name} image encoder")
    if getattr(model, "text_encoder", None) is not None:
        tc = config.text_encoder
        parts.append("tiny BERT text encoder" if tc.tiny is not None else f"text encoder {tc.name_or_path}")
    return ", ".join(parts)


def train(
    config: Config,
    records: dict[str, list[dict]],
    out_dir: str | Path,
    *,
    callbacks: Sequence[Callback] | None = None,
    progress: bool = True,
    resume: bool = False,
) -> TrainResult:
    """Train, calibrate, evaluate and save one model, with ``config.training.threads`` torch threads.

    The thread count is set for the run and restored afterwards.

    Args:
        config: Run configuration.
        records: Split name (``train``, ``val``, ``test``) -> study records
            (see :func:`medfusion.ingest.manifest.rows_to_records`). ``train`` and ``val`` are required.
        out_dir: Run folder: ``text_encoder/`` (tiny BERT), ``checkpoints/best.safetensors``, ``model/``.
        callbacks: Objects with ``on_epoch_end(epoch, metrics)`` and/or ``on_train_end(result)``.
        progress: Log one line per epoch at INFO (else DEBUG).
        resume: Continue from the last epoch committed in ``out_dir/checkpoints`` (model, optimizer,
            scheduler, scaler, early-stopping state, history and random states); callbacks see only
            the epochs run now. Refused when ``out_dir`` holds no committed checkpoint.

    Returns:
        The :class:`TrainResult`.

    Raises:
        MedfusionError: ``train`` or ``val`` is empty, a component cannot be built, or ``resume`` finds
            no checkpoint or one written with another configuration.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(config.training.threads)
    log.debug("training with %d torch thread(s)", config.training.threads)
    try:
        return _train(config, records, out_dir, callbacks=callbacks, progress=progress, resume=resume)
    finally:
        torch.set_num_threads(before)


def _train(
    config: Config,
    records: dict[str, list[dict]],
    out_dir: str | Path,
    *,
    callbacks: Sequence[Callback] | None = None,
    progress: bool = True,
    resume: bool = False,
) -> TrainResult:
    """:func:`train`, in the thread setting it made."""
    for split in ("train", "val"):
        if not records.get(split):
            raise MedfusionError(f"no {split} studies: training needs train and val splits")
    out_dir = Path(out_dir)
    if resume and not has_checkpoint(out_dir):
        raise MedfusionError(f"{checkpoint_state(out_dir)}: nothing to resume (no committed epoch checkpoint)")
    out_dir.mkdir(parents=True, exist_ok=True)
    info = distributed.current()
    callbacks = list(callbacks or []) if info.is_main else []  # rank 0 alone reports (MLflow)
    t, labels = config.training, list(config.labels)
    say = log.info if progress and info.is_main else log.debug
    seed_everything(t.seed)
    device = resolve_device(distributed.device_for(t.device, info))
    amp_dtype, use_scaler = resolve_amp(t.amp, device)

    card = ModelCard.from_config(config)
    sections = card.preprocessing.report_sections
    train_reports = [report_text(r.get("report") or "", sections) for r in records["train"]]
    if info.is_main:
        text_dir, tokenizer = prepare_text_encoder(config, train_reports, out_dir)
    distributed.barrier()
    if not info.is_main:  # read what rank 0 wrote
        text_dir, tokenizer = reuse_text_encoder(config, out_dir)
    if reads_text(config) and info.is_main:
        warn_if_truncated(tokenizer, train_reports, card.preprocessing.max_tokens)
    model = build_model(card, text_dir)
    image = config.image_encoder
    load_pretrained(
        model, image_weights=image.pretrained_path, image_layout=image.pretrained_layout, text_source=text_dir
    )
    if info.active:
        model = synchronise_batchnorm(model, device)  # type: ignore[assignment]
    model.to(device)
    # the decoded-image cache: rank 0 fills it, the other ranks then read it
    with distributed.main_first() if config.data.cache_dir is not None else contextlib.nullcontext():
        loaders, rejected, cache_stats = _loaders(
            card, config, records, tokenizer, device, images=model.image_encoder is not None
        )
    #: What the training steps call: DDP (gradients averaged over ranks) or the model itself.
    forward: torch.nn.Module = model
    if info.active:
        forward = DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,  # a fusion may leave a head out of a step (a modality missing)
        )
    train_sampler = loaders["train"].batch_sampler
    assert isinstance(train_sampler, GlobalBatchSampler)
    pos_weight = pos_weights(records["train"], labels).to(device) if t.pos_weight == "auto" else None
    use_dropout = config.fusion.modality_dropout > 0 and {IMAGE, TEXT} <= set(model.fusion.modalities)
    dropout_rng = torch.Generator().manual_seed(t.seed + 1)
    use_aux = config.fusion.aux_loss_weight > 0 and len(model.fusion.modalities) > 1
    use_stacking = config.fusion.stacking and {IMAGE, TEXT} <= set(model.fusion.modalities)
    if use_stacking and not use_aux:
        log.warning("fusion.stacking with aux_loss_weight 0: the modality heads are trained only through fusion")

    optimizer = torch.optim.AdamW(param_groups(model, config))
    steps_per_epoch = math.ceil(len(loaders["train"]) / t.grad_accum_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(steps_per_epoch * t.epochs, t.warmup_fraction)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    checkpoints = EpochCheckpoints(
        out_dir,
        config,
        writer=info.is_main,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        dropout_rng=dropout_rng,
        loaders=loaders,
    )
    if not resume and info.is_main:
        checkpoints.clear()
    distributed.barrier()
    state = checkpoints.restore()
    if state.epoch:
        say("resuming after epoch %d (best epoch %d) from %s", state.epoch, state.best_epoch, checkpoints.dir)
    say(
        "training %s (%s fusion: %s) on %s%s, amp=%s: %s studies",
        config.name,
        config.fusion.name,
        _encoders(config, model),
        device,
        f" x {info.world_size} processes" if info.active else "",
        amp_dtype,
        {s: len(records.get(s) or []) for s in SPLITS},
    )

    history = state.history
    best_score, best_epoch, stale = state.best_score, state.best_epoch, state.stale
    stopped_early = stale >= t.early_stopping_patience and state.epoch < t.epochs
    first = t.epochs + 1 if stale >= t.early_stopping_patience else state.epoch + 1  # killed after its last epoch
    for epoch in range(first, t.epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        train_sampler.set_epoch(epoch)
        total, batches = 0.0, 0
        optimizer.zero_grad(set_to_none=True)
        n_batches = len(loaders["train"])
        n_train = train_sampler.n
        for i, batch in enumerate(loaders["train"]):
            if use_dropout:
                size = min(t.batch_size, n_train - i * t.batch_size)  # this global batch's studies
                lo, hi = distributed.shard_span(size, info.rank, info.world_size)
                batch = modality_dropout(batch, config.fusion.modality_dropout, dropout_rng, (lo, hi, size))
            batch = _to(batch, device)
            sync = (i + 1) % t.grad_accum_steps == 0 or i + 1 == n_batches
            no_sync = forward.no_sync() if info.active and not sync else contextlib.nullcontext()  # type: ignore[operator]
            with no_sync:
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    out = forward(batch)
                loss = masked_bce(out.logits, batch["label"], pos_weight, global_batch=info.active)
                if use_aux:
                    loss = loss + config.fusion.aux_loss_weight * modality_loss(
                        out.modality_logits, batch, pos_weight, global_batch=info.active
                    )
                scaler.scale(loss / t.grad_accum_steps).backward()
            if sync:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
            total += float(loss.detach())
            batches += 1
        total = distributed.mean_over_ranks(total)
        if not math.isfinite(total):
            raise MedfusionError(f"training loss is not finite at epoch {epoch}; lower training.lr or turn amp off")

        candidates = None
        if use_stacking:  # no stacking while training: the model's logits are the fused ones
            candidates = gathered_candidates(model, loaders["val"], device, amp_dtype)
            use_stacking = len(candidates.modality) == 2  # concat has no modality heads
            val_logits, val_targets = candidates.fused, candidates.targets
        else:
            val_logits, val_targets = gathered_logits(model, loaders["val"], device, amp_dtype)
        val_loss = float(
            masked_bce(
                torch.as_tensor(val_logits).float(),
                torch.as_tensor(val_targets).float(),
                None if pos_weight is None else pos_weight.cpu(),
            )
        )
        report = evaluate(Calibration.identity(len(labels)).probabilities(val_logits), val_targets, labels)
        stack_score = (
            stacked_val_score(candidates, labels, config.fusion.stacking_prior)
            if candidates and use_stacking
            else float("nan")
        )
        row = {
            "epoch": float(epoch),
            "train_loss": total / max(1, batches),
            "val_loss": val_loss,
            "lr": float(optimizer.param_groups[0]["lr"]),
            "epoch_seconds": time.perf_counter() - epoch_start,
            **{f"val_{k}": v for k, v in report.metrics.items()},
        }
        history.append(row)
        for cb in callbacks:
            if hasattr(cb, "on_epoch_end"):
                cb.on_epoch_end(epoch, dict(row))
        # Early stopping on validation macro AUROC; on -loss when no label has both classes in val.
        # With stacking, on the stacked model's validation score (stacked_val_score).
        score = report.metrics["macro_auroc"] if math.isfinite(report.metrics["macro_auroc"]) else -val_loss
        if math.isfinite(stack_score):
            score = stack_score
        improved = score > best_score + MIN_DELTA
        if improved:
            best_score, best_epoch, stale = score, epoch, 0
        else:
            stale += 1
        state.epoch, state.best_score, state.best_epoch, state.stale = epoch, best_score, best_epoch, stale
        checkpoints.commit(state, improved)
        say(
            "epoch %d/%d  train_loss %.4f  val_loss %.4f  val_macro_auroc %.4f  %.1fs%s",
            epoch,
            t.epochs,
            row["train_loss"],
            val_loss,
            report.metrics["macro_auroc"],
            row["epoch_seconds"],
            "  *" if improved else "",
        )
        if stale >= t.early_stopping_patience:
            stopped_early = epoch < t.epochs
            say("early stopping: no improvement for %d epochs (best epoch %d)", stale, best_epoch)
            break
    train_seconds = sum(row["epoch_seconds"] for row in history)  # includes epochs before a resume

    best = checkpoints.dir / BEST_FILE
    if info.is_main:
        best = checkpoints.finalize()
    distributed.barrier()
    load_model(model, str(best))
    stacking = None
    if use_stacking:
        c = gathered_candidates(model, loaders["val"], device, amp_dtype)
        if len(c.modality) == 2:
            stacking = fit_stacking(
                c.fused, c.modality, c.present, c.targets, labels, prior=config.fusion.stacking_prior
            )
            model.set_stacking(stacking.weights)
            card = card.model_copy(update={"stacking": stacking})
            say("stacking weights (fused, image, text): %s", stacking.by_label(tuple(labels)))
    val_logits, val_targets = gathered_logits(model, loaders["val"], device, amp_dtype)
    calibration = fit_calibration(val_logits, val_targets)  # after stacking: per label, its own head's scale
    val_probs = calibration.probabilities(val_logits)
    thresholds = tune_thresholds(val_probs, val_targets)
    val_report = evaluate(val_probs, val_targets, labels, thresholds)
    skipped = {"val": val_report.skipped}
    n_labels = len(labels)
    test_probs, test_targets, test_metrics = np.zeros((0, n_labels)), np.zeros((0, n_labels)), {}
    test_ci: dict[str, tuple[float, float]] = {}
    by_label: dict[str, tuple[float | None, ...]] = {}
    if "test" in loaders:
        test_logits, test_targets = gathered_logits(model, loaders["test"], device, amp_dtype)
        test_probs = calibration.probabilities(test_logits)
        test_report = evaluate(test_probs, test_targets, labels, thresholds)
        test_metrics, skipped["test"] = test_report.metrics, test_report.skipped
        test_ci = bootstrap_ci(test_probs, test_targets, labels, patients(records["test"]), thresholds, seed=t.seed)
        if stacking is not None:
            c = gathered_candidates(model, loaders["test"], device, amp_dtype)
            alone = fit_stacking(c.fused, c.modality, c.present, c.targets, labels, step=1.0).val_auroc
            by_label = {k: tuple(alone[k]) for k in CANDIDATES}
            by_label["stacked"] = tuple(test_metrics.get(f"auroc_{n}") for n in labels)
    else:
        log.warning("no test split: test metrics are empty")

    model_dir = out_dir / "model"
    if info.is_main:
        model_dir = save_model_dir(
            model, model_dir, card=card.calibrated(thresholds.tolist(), calibration), tokenizer=tokenizer
        )
    distributed.barrier()
    result = TrainResult(
        model_dir=model_dir,
        best_epoch=best_epoch,
        history=history,
        val_metrics=val_report.metrics,
        test_metrics=test_metrics,
        thresholds=[float(x) for x in thresholds],
        calibration=calibration,
        train_seconds=train_seconds,
        test_probabilities=test_probs,
        test_targets=test_targets,
        labels=labels,
        skipped=skipped,
        rejected=rejected,
        data_cache=cache_stats if config.data.cache_dir is not None else None,
        stopped_early=stopped_early,
        test_ci=test_ci,
        test_study_uids=[str(r.get("meta", {}).get("study_uid", "")) for r in records.get("test", [])],
        stacking=stacking,
        candidate_test_auroc_by_label=by_label,
    )
    say(
        "best epoch %d: val macro AUROC %.4f, test macro AUROC %.4f, calibration (scale, bias) %s",
        best_epoch,
        val_report.metrics["macro_auroc"],
        test_metrics.get("macro_auroc", float("nan")),
        calibration.describe(labels),
    )
    for cb in callbacks:
        if hasattr(cb, "on_train_end"):
            cb.on_train_end(result)
    return result
