"""Which model scores: a local model folder or an MLflow model URI, resolved to a model folder.

MLflow URIs (``models:/name@alias``, ``models:/name/3``, ``runs:/<run id>/model``) are downloaded
once into ``cache_dir``; the model folder is the pyfunc's ``model_dir`` artifact (see
:mod:`medfusion.tracking.pyfunc`), found by its ``medfusion_model.json``. The registered name and
version are recorded as provenance on every result.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from medfusion.errors import MedfusionError
from medfusion.models.card import META_FILE, ModelCard
from medfusion.results import Provenance

log = logging.getLogger(__name__)

_MODELS_ALIAS = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)$")
_MODELS_VERSION = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")
_RUNS = re.compile(r"^runs:/(?P<run_id>[^/]+)(?:/(?P<path>.*))?$")


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to load.

    Attributes:
        uri: What the user asked for.
        model_dir: The medfusion model folder (``medfusion_model.json`` + weights).
        name: Registered model name (the folder's config name for a local folder).
        version: Registered version (``run:<id>`` when not registered, ``local`` for a folder).
        model_id: ``<config name>-<weights hash>`` from the folder.
    """

    uri: str
    model_dir: Path
    name: str
    version: str
    model_id: str

    @property
    def provenance(self) -> Provenance:
        """What every result scored with this model says about it (:class:`medfusion.results.Provenance`)."""
        return Provenance(model_name=self.name, model_version=self.version, model_id=self.model_id)


def resolve_model(uri: str, *, tracking_uri: str | None = None, cache_dir: str | Path | None = None) -> ResolvedModel:
    """Resolve a local model folder or an MLflow URI to a model folder.

    Args:
        uri: A folder with ``medfusion_model.json``, ``models:/name@alias``, ``models:/name/<version>``
            or ``runs:/<run id>[/<artifact path>]``.
        tracking_uri: MLflow tracking/registry store (default: MLflow's own resolution).
        cache_dir: Where to download MLflow models (default: a new temporary folder).

    Raises:
        MedfusionError: The folder is not a model folder, the URI is malformed or unknown, or the
            downloaded model holds no medfusion model folder.
    """
    local = Path(uri)
    if "://" not in uri and not uri.startswith(("models:", "runs:")):
        if not (local / META_FILE).is_file():
            raise MedfusionError(
                f"{uri}: not a medfusion model folder (no {META_FILE}) nor an MLflow models:/ or runs:/ URI"
            )
        card = ModelCard.load(local)
        return ResolvedModel(uri, local.resolve(), card.name, "local", card.model_id)
    import mlflow
    from mlflow.exceptions import MlflowException

    from medfusion.tracking.store import use_store

    if tracking_uri:  # process-wide, as medfusion.tracking.store.connect does (MLflow reads it in places)
        use_store(tracking_uri)
    client = mlflow.MlflowClient()
    try:
        if m := _MODELS_ALIAS.match(uri):
            mv = client.get_model_version_by_alias(m["name"], m["alias"])
            name, version = mv.name, str(mv.version)
            download_uri = client.get_model_version_download_uri(name, version)
        elif m := _MODELS_VERSION.match(uri):
            mv = client.get_model_version(m["name"], m["version"])
            name, version = mv.name, str(mv.version)
            download_uri = client.get_model_version_download_uri(name, version)
        elif m := _RUNS.match(uri):
            name, version, download_uri = _run_model(client, m["run_id"])
        else:
            raise MedfusionError(f"{uri}: not a models:/name@alias, models:/name/<version> or runs:/<id>/<path> URI")
        import tempfile

        dest = Path(cache_dir or tempfile.mkdtemp(prefix="medfusion-model-")) / f"{name}-{version}".replace(":", "_")
        if not dest.exists() or not any(dest.rglob(META_FILE)):
            dest.mkdir(parents=True, exist_ok=True)
            mlflow.artifacts.download_artifacts(artifact_uri=download_uri, dst_path=str(dest))
    except MlflowException as exc:
        raise MedfusionError(f"{uri}: cannot resolve the model in the MLflow store: {exc.message}") from None
    found = sorted(dest.rglob(META_FILE))
    if not found:
        raise MedfusionError(f"{uri}: the MLflow model holds no medfusion model folder ({META_FILE})")
    model_dir = found[0].parent
    log.info("model %s -> %s version %s (%s)", uri, name, version, model_dir)
    return ResolvedModel(uri, model_dir, name, version, ModelCard.load(model_dir).model_id)


def _run_model(client: object, run_id: str) -> tuple[str, str, str]:
    """(name, version, download URI) of the model a run logged: its latest registered version, else
    the run's logged model (version ``run:<id>``)."""
    import mlflow

    versions = client.search_model_versions(f"run_id='{run_id}'")  # type: ignore[attr-defined]
    if versions:
        latest = max(versions, key=lambda v: int(v.version))
        name, version = latest.name, str(latest.version)
        return name, version, client.get_model_version_download_uri(name, version)  # type: ignore[attr-defined]
    logged = mlflow.search_logged_models(filter_string=f"source_run_id = '{run_id}'", output_format="list")
    if not logged:
        raise MedfusionError(f"runs:/{run_id}: the run logged no model")
    return "run", f"run:{run_id}", logged[0].model_uri
