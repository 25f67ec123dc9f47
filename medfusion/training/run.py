"""Train from a config file: read the manifest (or the demo cohort, if asked), split it into records, run the engine."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medfusion.config import Config, load_config, merge_overrides
from medfusion.errors import ConfigError, MedfusionError
from medfusion.training import distributed
from medfusion.training.checkpoint import checkpoint_state, has_checkpoint
from medfusion.training.engine import SPLITS, Callback, TrainResult, train

log = logging.getLogger(__name__)


def resolve_config(config: str | Path | Config, overrides: dict[str, Any] | None = None) -> Config:
    """A validated :class:`Config` from a YAML path or a Config, with nested ``overrides`` merged in.

    Raises:
        ConfigError: The file or the merged result is invalid.
    """
    if not isinstance(config, Config):
        return load_config(config, overrides)
    if not overrides:
        return config
    try:
        return Config.model_validate(merge_overrides(config.model_dump(), overrides))
    except ValueError as exc:
        raise ConfigError(f"invalid overrides {overrides}: {exc}") from None


def demo_manifest(config: Config, *, progress: bool = True) -> Path:
    """The demo cohort's manifest under ``project_dir/demo_cohort``, generated unless an identical one exists."""
    from medfusion.datasets.demo.cohort import MARKER, generate_demo_cohort

    root = config.project_dir / "demo_cohort"
    manifest = root / "manifest.parquet"
    demo = config.data.demo
    wanted = {
        "seed": demo.seed,
        "n_studies": demo.n_studies,
        "image_size": demo.image_size,
        "broken_files": demo.broken_files,
    }
    knobs = ("image_signal", "text_signal", "image_findings", "text_findings", "prevalence")  # absent: default
    if manifest.is_file() and (root / MARKER).is_file():
        marker = json.loads((root / MARKER).read_text(encoding="utf-8"))
        marker = {**{k: getattr(type(demo)(), k) for k in knobs}, **marker}
        wanted.update({k: getattr(demo, k) for k in knobs})
        if all(marker.get(k) == v for k, v in wanted.items()):
            log.info("using the existing demo cohort %s", root)
            return manifest
    return generate_demo_cohort(root, demo, labels=config.labels, progress=progress).manifest_path


@dataclass(frozen=True)
class TrainingData:
    """A run's validated manifest and its records.

    Attributes:
        manifest_path: Where the manifest was read from.
        manifest: The validated manifest table.
        records: Split (``train``/``val``/``test``) -> study records for training.
    """

    manifest_path: Path
    manifest: pd.DataFrame
    records: dict[str, list[dict]]


def check_data_source(config: Config) -> None:
    """Refuse a run that names no data: an unset ``data.manifest`` never means the demo cohort.

    Raises:
        ConfigError: ``data.manifest`` is unset and ``data.source`` is not ``demo``.
    """
    if config.data.manifest is None and config.data.source != "demo":
        raise ConfigError(
            "data.manifest is not set: point it at your manifest (made by 'medfusion build-manifest'), "
            "or set data.source: demo to train on the synthetic demo cohort"
        )


def training_manifest(config: Config, *, progress: bool = True) -> Path:
    """The manifest a run trains and is evaluated on: ``data.manifest``, or the demo cohort's when
    ``data.source`` is ``demo`` (never the demo by default).

    Raises:
        ConfigError: No data named (:func:`check_data_source`).
    """
    check_data_source(config)
    if config.data.manifest is not None:
        return config.data.manifest
    log.info("data.source is demo: the synthetic demo cohort under %s (no patient data)", config.project_dir)
    return demo_manifest(config, progress=progress)


def load_records(config: Config, *, progress: bool = True) -> TrainingData:
    """The manifest (:func:`training_manifest`) and records of a config."""
    from medfusion.ingest.manifest import format_split_sizes, read_manifest, rows_to_records, split_sizes

    manifest = training_manifest(config, progress=progress)
    df = read_manifest(manifest, config.labels)
    log.info("manifest splits: %s", format_split_sizes(split_sizes(df)))
    records = {s: rows_to_records(df[df["split"] == s], config.labels) for s in SPLITS}
    return TrainingData(Path(manifest), df, records)


def train_from_config(
    config: str | Path | Config,
    *,
    overrides: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    callbacks: Sequence[Callback] | None = None,
    progress: bool = True,
    resume: bool = False,
) -> TrainResult:
    """Train the model a config describes.

    Args:
        config: YAML path or :class:`Config`.
        overrides: Nested dict merged over the config (e.g. ``{"fusion": {"name": "late"}}``).
        out_dir: Run folder; default ``<project_dir>/training/<name>-<fusion>-<UTC timestamp>``.
        callbacks: Passed to :func:`medfusion.training.engine.train`.
        progress: Per-epoch log lines (and the demo generator's progress bar).
        resume: Continue a killed run from its last epoch checkpoint: the one in ``out_dir``, or (no
            ``out_dir``) the newest ``<project_dir>/training/<name>-<fusion>-*`` with a checkpoint.
            Refused (before any data is read) when there is none.

    Returns:
        The :class:`~medfusion.training.engine.TrainResult` (model folder in ``result.model_dir``).

    Raises:
        MedfusionError: ``resume`` with nothing to resume; no manifest (:func:`training_manifest`).
    """
    cfg = resolve_config(config, overrides)
    info = distributed.init_from_env(cfg.training.device)  # torchrun: join the process group
    if not info.is_main:  # rank 0 names the run folder and makes the data first
        distributed.barrier()
        data = load_records(cfg, progress=False)
        out_dir = distributed.broadcast(None)
        return train(cfg, data.records, out_dir, callbacks=callbacks, progress=False, resume=resume)
    if out_dir is None and resume:
        pattern = f"{cfg.name}-{cfg.fusion.name}-*"
        out_dir = latest_resumable(cfg.project_dir / "training", pattern)
        if out_dir is None:
            raise MedfusionError(
                f"resume: nothing to resume in {cfg.project_dir / 'training'} "
                f"(no {pattern} folder with an epoch checkpoint)"
            )
    elif resume and out_dir is not None and not has_checkpoint(out_dir):  # the engine refuses too; before reading data
        raise MedfusionError(f"{checkpoint_state(out_dir)}: nothing to resume (no committed epoch checkpoint)")
    data = load_records(cfg, progress=progress)
    distributed.barrier()
    if out_dir is None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
        out_dir = cfg.project_dir / "training" / f"{cfg.name}-{cfg.fusion.name}-{stamp}"
    distributed.broadcast(str(out_dir))
    log.info("manifest %s -> %s", data.manifest_path, out_dir)
    return train(cfg, data.records, out_dir, callbacks=callbacks, progress=progress, resume=resume)


def latest_resumable(folder: Path, pattern: str = "*") -> Path | None:
    """The most recently committed run folder under ``folder`` (matching ``pattern``) that has a checkpoint."""
    runs = [p for p in folder.glob(pattern) if has_checkpoint(p)]
    if not runs:
        return None
    return max(runs, key=lambda p: checkpoint_state(p).stat().st_mtime)
