"""End-to-end workflows behind the CLI: train + track + register, promote, and the demo."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfusion.config import Config
from medfusion.errors import ConfigError, MedfusionError
from medfusion.ingest.manifest import manifest_hash, split_sizes
from medfusion.tracking.promotion import CHALLENGER, promote_challenger
from medfusion.tracking.store import connect, tracking_uri

log = logging.getLogger(__name__)

#: Input example stored with the model: deliberately synthetic (a real study's report would put
#: patient text into MLflow artifacts).
EXAMPLE_INPUT = {"image_paths": [], "report_text": "FINDINGS: Lungs are clear. IMPRESSION: No acute abnormality."}


@dataclass
class TrainOutcome:
    """A finished, tracked training run; registered unless ``version`` is None."""

    run_id: str
    registered_model: str
    version: str | None
    result: Any
    tracking_uri: str
    model_id: str = ""  # the MLflow 3 LoggedModel the run logged (``models:/<model_id>``)

    def summary(self) -> str:
        """Human-readable result: macro and per-label test metrics, where the predictions are, the registration."""
        from medfusion.metrics import label_table
        from medfusion.tracking.runs import TEST_PREDICTIONS_ARTIFACT

        m, result = self.result.test_metrics, self.result
        lines = [
            f"run {self.run_id}: test macro AUROC {m.get('macro_auroc', float('nan')):.3f}, "
            f"ECE {m.get('ece', float('nan')):.3f} ({result.train_seconds:.0f} s)"
        ]
        if m:
            lines.append("test split, per label (F1 at the label's threshold, tuned on val):")
            lines.extend("  " + row for row in label_table(m, result.labels, result.thresholds).splitlines())
            lines.append(f"test predictions: artifact {TEST_PREDICTIONS_ARTIFACT} of run {self.run_id}")
        if self.version is None:
            lines.append(f"not registered (the model is logged in run {self.run_id}; --register registers it)")
        else:
            lines.append(f"registered {self.registered_model} v{self.version} as @{CHALLENGER}")
        return "\n".join(lines)


def train_and_register(
    config: Config, *, resume: bool = False, register: bool = True, tags: dict[str, str] | None = None
) -> TrainOutcome:
    """Train on the manifest, track everything in MLflow, register the model as ``@challenger``.

    Args:
        config: Run configuration.
        resume: Continue the newest killed run (its folder ``<project_dir>/training/<run id>`` holds
            an epoch checkpoint) inside the same MLflow run.
        register: Register the model as a new version and move ``@challenger`` to it. False (ablations,
            benchmarks, experiments): the model is logged in the run only, so the registry holds
            candidates, not experiments.
        tags: Extra MLflow run tags (e.g. ``{"purpose": "ablation"}``).

    Raises:
        MedfusionError: ``resume`` is set and there is no killed run to continue (before any data is read).
        ConfigError: No manifest to train on (:func:`medfusion.training.run.training_manifest`).
    """
    import mlflow

    from medfusion.tracking.datasets import TRAINING_MANIFEST, log_manifest_input
    from medfusion.tracking.pyfunc import log_pyfunc
    from medfusion.tracking.runs import MlflowEpochLogger, log_run_context, log_training_result
    from medfusion.training import distributed
    from medfusion.training.engine import train
    from medfusion.training.run import check_data_source, load_records

    info = distributed.init_from_env(config.training.device)  # torchrun: join the process group
    check_data_source(config)  # both refusals come before the tracking store or any data is touched
    if not info.is_main:
        return _train_other_rank(config)
    folder = _resumable_folder(config) if resume else None
    client = connect(config)
    resumed = _resumable_run(folder) if folder is not None else None
    data = load_records(config)
    distributed.barrier()  # the other ranks read the records (the demo cohort) rank 0 made
    records = data.records
    data_hash = manifest_hash(data.manifest)
    name = config.tracking.registered_model
    with mlflow.start_run(run_id=resumed, run_name=None if resumed else f"{config.name}-{config.fusion.name}") as run:
        if resumed:
            log.info("resuming MLflow run %s", resumed)
        else:
            log_run_context(config, data_hash, {s: len(r) for s, r in records.items()}, split_sizes(data.manifest))
            log_manifest_input(data.manifest, config.labels, name=TRAINING_MANIFEST, context="training")
        mlflow.set_tags({**(tags or {}), "registered": str(register).lower()})
        out_dir = config.project_dir / "training" / run.info.run_id
        distributed.broadcast((str(out_dir), run.info.run_id, bool(resumed)))
        result = train(config, records, out_dir, callbacks=[MlflowEpochLogger()], resume=bool(resumed))
        log_training_result(config, result)
        info = log_pyfunc(
            result.model_dir,
            labels=config.labels,
            registered_model=name if register else None,
            example_row=EXAMPLE_INPUT,
        )
    if not register:
        return TrainOutcome(run.info.run_id, name, None, result, tracking_uri(config), info.model_id)
    if info.registered_model_version is None:
        raise MedfusionError(f"run {run.info.run_id}: the model was logged but no registered version came back")
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, CHALLENGER, version)
    version_tags = {
        "data_hash": data_hash,
        "fusion": config.fusion.name,
        "test_macro_auroc": f"{result.test_metrics['macro_auroc']:.4f}",
        "test_ece": f"{result.test_metrics['ece']:.4f}",
    }
    for key, value in version_tags.items():
        client.set_model_version_tag(name, version, key, value)
    return TrainOutcome(run.info.run_id, name, version, result, tracking_uri(config), info.model_id)


def _train_other_rank(config: Config) -> TrainOutcome:
    """Rank > 0 of a distributed run: train alongside rank 0 in its run folder; no tracking, no registration."""
    from medfusion.training import distributed
    from medfusion.training.engine import train
    from medfusion.training.run import load_records

    distributed.barrier()  # rank 0 has read (or generated) the data
    records = load_records(config, progress=False).records
    out_dir, run_id, resumed = distributed.broadcast(None)
    result = train(config, records, out_dir, resume=resumed, progress=False)
    return TrainOutcome(run_id, config.tracking.registered_model, None, result, "")


def _resumable_folder(config: Config) -> Path:
    """The newest run folder under ``<project_dir>/training`` with an epoch checkpoint.

    Raises:
        MedfusionError: There is none (names where it looked).
    """
    from medfusion.training.run import latest_resumable

    where = config.project_dir / "training"
    folder = latest_resumable(where)
    if folder is None:
        raise MedfusionError(
            f"--resume: nothing to resume in {where} (no run folder with an epoch checkpoint); "
            "train without --resume to start a new run"
        )
    return folder


def _resumable_run(folder: Path) -> str:
    """The id of the unfinished MLflow run a checkpointed run folder belongs to (its name).

    Raises:
        MedfusionError: The tracking store has no such run, or it finished.
    """
    import mlflow

    try:
        status = mlflow.MlflowClient().get_run(folder.name).info.status
    except mlflow.exceptions.MlflowException:
        raise MedfusionError(
            f"--resume: {folder} has a checkpoint but the tracking store has no MLflow run {folder.name} to continue"
        ) from None
    if status == "FINISHED":
        raise MedfusionError(f"--resume: the MLflow run of {folder} has already finished; nothing to resume")
    return folder.name


def run_demo(config: Config) -> tuple[bool, str]:
    """Demo cohort -> train -> track -> register -> promote.

    The demo command asks for the demo explicitly: the run trains on the synthetic demo cohort
    (``data.source: demo``) whatever the configuration's source.

    Args:
        config: Run configuration (``medfusion/configs/demo.yaml`` by default).

    Returns:
        ``(promoted, text)``: whether the new model became ``@champion``, and what to do next.

    Raises:
        ConfigError: The configuration sets ``data.manifest`` (train on it with ``medfusion train``).
    """
    if config.data.manifest is not None:
        raise ConfigError(
            f"the demo trains on the synthetic demo cohort, but the configuration sets data.manifest "
            f"({config.data.manifest}); use 'medfusion train' to train on it"
        )
    config = config.model_copy(update={"data": config.data.model_copy(update={"source": "demo"})})
    outcome = train_and_register(config)
    decision = promote_challenger(config)
    uri = outcome.tracking_uri
    return decision.promoted, "\n".join(
        [
            outcome.summary(),
            decision.summary(),
            "",
            "Next:",
            f"  inspect runs and the registry:  mlflow ui --backend-store-uri {uri}",
            f"  load the champion in Python:     MLFLOW_TRACKING_URI={uri} python -c "
            f"\"import mlflow; m = mlflow.pyfunc.load_model('models:/{config.tracking.registered_model}@champion')\"",
            "  review the test split:           medfusion review   (then open http://127.0.0.1:8501)",
            f"  batch-score the whole cohort:    medfusion score {config.project_dir}/demo_cohort/dicom "
            f"--reports {config.project_dir}/demo_cohort/reports --out {config.project_dir}/scores --fhir",
        ]
    )
