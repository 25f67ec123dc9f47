"""Where runs and models are tracked.

Embedded default: a sqlite tracking + registry store at ``<project_dir>/mlflow.db`` and artifacts
under ``<project_dir>/mlartifacts``. ``MLFLOW_TRACKING_URI`` in the environment (e.g.
``http://mlflow.internal:5000``) wins over the config, then ``tracking.tracking_uri``.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from medfusion.config import Config

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


def tracking_uri(config: Config) -> str:
    """The tracking URI in force for ``config`` (environment, then config, then sqlite default)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if config.tracking.tracking_uri:
        return config.tracking.tracking_uri
    return f"sqlite:///{(config.project_dir / 'mlflow.db').resolve()}"


def uses_embedded_store(config: Config) -> bool:
    """True when runs go to the local sqlite store (artifacts then live under project_dir)."""
    return tracking_uri(config).startswith("sqlite:///") and not os.environ.get("MLFLOW_TRACKING_URI")


def use_store(uri: str) -> None:
    """Point MLflow's fluent API (tracking and registry) at ``uri`` for this process only.

    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` into the environment, which would
    then override every later config's store (:func:`tracking_uri` gives the environment precedence)
    and leak into child processes. The environment is restored to what the user set.
    """
    import mlflow

    saved = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def connect(config: Config, experiment: str | None = None) -> MlflowClient:
    """Point MLflow at the configured store and make sure the experiment exists.

    Args:
        config: Run configuration.
        experiment: Experiment name (default ``config.tracking.experiment``).

    Returns:
        A client bound to the store; ``mlflow``'s fluent API is set to the same store and experiment
        (for this process only: the environment, which children inherit, is left as the user set it).
    """
    import mlflow

    config.project_dir.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(config)
    use_store(uri)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = experiment or config.tracking.experiment
    if client.get_experiment_by_name(name) is None:
        location = None
        if uses_embedded_store(config):
            location = (config.project_dir / "mlartifacts").resolve().as_uri()
        client.create_experiment(name, artifact_location=location)
        log.info("created MLflow experiment %r", name)
    saved = os.environ.get("MLFLOW_EXPERIMENT_ID")
    mlflow.set_experiment(name)
    # set_experiment also exports MLFLOW_EXPERIMENT_ID: an id of THIS store, which would then point every
    # later store of this process (another config, a test) and every child process at a wrong experiment.
    if saved is None:
        os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    else:
        os.environ["MLFLOW_EXPERIMENT_ID"] = saved
    return client
