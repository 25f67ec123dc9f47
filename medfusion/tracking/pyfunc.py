"""The model as an MLflow pyfunc: DICOM path(s) + report text (or a FHIR DiagnosticReport) in,
per-label probabilities and decisions out.

Labels, thresholds, calibration and preprocessing travel inside the logged model folder
(``medfusion_model.json`` written by :func:`medfusion.models.model.save_model_dir`), so
``mlflow.pyfunc.load_model("models:/medfusion@champion")`` scores new studies in a fresh process.

Input columns:
    ``image_paths``: list of DICOM paths of one study, or one path, or a JSON array string; may be empty.
    ``report_text``: report text; may be empty.
    ``fhir_report``: optional FHIR DiagnosticReport JSON; used when ``report_text`` is empty.

Output: one row per input row, in order, built by :class:`medfusion.results.ResultRow` (the same
schema as batch scoring's Parquet rows, less ``study_uid``): ``prob_<label>``, ``decision_<label>``
and ``threshold_<label>`` per label, then the provenance ``model_name``, ``model_version``,
``model_id``, ``medfusion_version``, ``scored_at``, ``status`` (``UNVERIFIED``), then ``error``
(empty, or why the row could not be scored: its probabilities are NaN, the other rows are still scored).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext

log = logging.getLogger(__name__)

MODEL_DIR_ARTIFACT = "model_dir"
#: The file MLflow runs to build the model at load time ("models from code", no cloudpickle).
ENTRY_POINT = Path(__file__).with_name("pyfunc_entry.py")


def _image_paths(value: Any) -> list[str]:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return []
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            return [str(v) for v in json.loads(text)]
        return [text]
    return [str(v) for v in value]


def _report_text(row: pd.Series) -> str:
    text = row.get("report_text")
    if isinstance(text, str) and text.strip():
        return text
    fhir_json = row.get("fhir_report")
    if isinstance(fhir_json, str) and fhir_json.strip():
        from medfusion.fhir.read import report_from_fhir_json

        return report_from_fhir_json(fhir_json, source="fhir_report column").text
    return ""


class MedFusionPyfunc(PythonModel):
    """pyfunc wrapper around :class:`medfusion.inference.Predictor`."""

    def load_context(self, context: PythonModelContext) -> None:
        from medfusion.inference import Predictor

        self.predictor = Predictor.from_dir(context.artifacts[MODEL_DIR_ARTIFACT])
        cfg = context.model_config or {}
        self.model_name = str(cfg.get("model_name", "medfusion"))
        self.model_version = _registry_version(Path(context.artifacts[MODEL_DIR_ARTIFACT]), self.model_name)

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        from medfusion.errors import MedfusionError
        from medfusion.inference import StudyInput
        from medfusion.results import Provenance, ResultRow, result_columns

        labels = self.predictor.labels
        provenance = Provenance(self.model_name, self.model_version, str(self.predictor.provenance["model_id"]))
        inputs, positions, errors = [], [], {}
        for i, (_, row) in enumerate(model_input.iterrows()):
            try:
                inputs.append(
                    StudyInput(image_paths=_image_paths(row.get("image_paths")), report_text=_report_text(row))
                )
                positions.append(i)
            except MedfusionError as exc:
                errors[i] = str(exc)
        predictions = dict(zip(positions, self.predictor.predict(inputs), strict=True)) if inputs else {}
        rows: list[dict[str, Any]] = []
        for i in range(len(model_input)):
            pred = predictions[i] if i in predictions else self.predictor.failed(errors[i])
            rows.append(ResultRow.from_prediction(pred, provenance).to_record(with_error=True))
        columns = [name for name, _ in result_columns(labels, study_uid=False, error=True)]
        return pd.DataFrame(rows, columns=columns)


def _registry_version(model_dir: Path, model_name: str) -> str:
    """Find which registered version this model folder belongs to (via the MLmodel file's run id)."""
    for parent in model_dir.parents:
        mlmodel = parent / "MLmodel"
        if mlmodel.exists():
            import yaml

            meta = yaml.safe_load(mlmodel.read_text())
            run_id = meta.get("run_id")
            try:
                versions = mlflow.MlflowClient().search_model_versions(f"name='{model_name}'")
            except mlflow.exceptions.MlflowException as exc:  # registry unreachable: still score
                log.warning("cannot reach the model registry to name the version: %s", exc)
                return f"run:{run_id}"
            for version in versions:
                if version.run_id == run_id:
                    return str(version.version)
            return f"run:{run_id}"
    return "unknown"


def signature_and_example(labels: list[str], example_row: dict[str, Any]) -> tuple[Any, pd.DataFrame]:
    """The pyfunc's input/output signature and an input example.

    Args:
        labels: Label names (prob/decision/threshold columns each, :func:`medfusion.results.result_columns`).
        example_row: ``{"image_paths": [...], "report_text": "..."}`` of one real study.
    """
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    from medfusion.results import result_columns

    inputs = Schema(
        [
            ColSpec(Array("string"), "image_paths"),
            ColSpec("string", "report_text"),
            ColSpec("string", "fhir_report", required=False),
        ]
    )
    outputs = Schema([ColSpec(kind, name) for name, kind in result_columns(labels, study_uid=False, error=True)])
    example = pd.DataFrame(
        [{"image_paths": list(example_row["image_paths"]), "report_text": example_row["report_text"]}]
    )
    return ModelSignature(inputs=inputs, outputs=outputs), example


def log_pyfunc(model_dir: Path, *, labels: list[str], registered_model: str | None, example_row: dict[str, Any]) -> Any:
    """Log the model folder as a pyfunc inside the active run and (unless ``registered_model`` is None) register it.

    The pyfunc is logged as code (:data:`ENTRY_POINT`), not as a cloudpickled object, and its weights
    are safetensors: loading it runs no unpickler. The running medfusion code goes with it as a wheel
    (:func:`medfusion.tracking.wheel.pack_running_package`), named in the model's ``requirements.txt``
    with the trained versions of its dependencies, so a fresh environment built from that file loads it.
    The registered version is tagged with the MLflow 3 ``LoggedModel`` id (``logged_model_id``) and the
    wheel's code digest (``medfusion_source_sha256``).

    Args:
        model_dir: The model folder.
        labels: Label names (the signature's output columns).
        registered_model: Registered model to add a version to; None logs the model in the run only.
        example_row: The input example (synthetic, never a real study).

    Returns:
        The ``ModelInfo``: ``model_id`` (the LoggedModel), ``registered_model_version`` (None when not
        registered).
    """
    import tempfile

    from medfusion.tracking.wheel import WHEEL_ARTIFACT, model_requirements, pack_running_package, source_digest

    signature, example = signature_and_example(labels, example_row)
    with tempfile.TemporaryDirectory(prefix="medfusion-wheel-") as tmp:
        wheel = pack_running_package(Path(tmp))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(ENTRY_POINT),  # models from code: nothing is pickled
            artifacts={MODEL_DIR_ARTIFACT: str(model_dir), WHEEL_ARTIFACT: str(wheel)},
            signature=signature,
            input_example=example,
            model_config={"model_name": registered_model or "unregistered"},
            registered_model_name=registered_model,
            pip_requirements=model_requirements(wheel.name),
        )
    if registered_model is not None and info.registered_model_version is not None:
        client = mlflow.MlflowClient()
        version = str(info.registered_model_version)
        client.set_model_version_tag(registered_model, version, "logged_model_id", info.model_id)
        client.set_model_version_tag(registered_model, version, "medfusion_source_sha256", source_digest())
    return info
