"""Manifests as MLflow 3 datasets: which data a run trained or was judged on, without the data.

MLflow records a dataset input as a name, a digest, a source, a schema and a profile (row counts); it
never stores rows. The frame handed to MLflow here is built from PHI-free columns only (split, number
of images, whether a report exists, the labels), so even the schema names no identifier column, and the
digest is the manifest's own content hash (:func:`medfusion.ingest.manifest.manifest_hash`), so the
dataset on a run can be matched to a manifest on disk without logging the manifest.
"""

from __future__ import annotations

import mlflow
import mlflow.data.pandas_dataset
import numpy as np
import pandas as pd

from medfusion.ingest.manifest import manifest_hash
from medfusion.ingest.records import LABEL_PREFIX

#: MLflow's dataset digest column holds 36 characters: the first 32 hex digits of the manifest hash.
DIGEST_CHARS = 32
TRAINING_MANIFEST = "training-manifest"
EVALUATION_SET = "frozen-eval-set"


def phi_free_frame(manifest: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Per-study columns that identify no one: ``split``, ``n_images``, ``has_report``, ``y_<label>``.

    Args:
        manifest: Manifest rows (``image_paths``, ``report_text``, ``y_<label>``; ``split`` optional).
        labels: Label names.
    """
    frame = pd.DataFrame(index=range(len(manifest)))
    frame["split"] = manifest["split"].astype(str).to_numpy() if "split" in manifest else "unsplit"
    frame["n_images"] = np.asarray([len(p) for p in manifest["image_paths"]], dtype=np.int64)
    frame["has_report"] = manifest["report_text"].fillna("").astype(str).str.strip().ne("").to_numpy()
    for label in labels:
        frame[f"{LABEL_PREFIX}{label}"] = manifest[f"{LABEL_PREFIX}{label}"].to_numpy(dtype=np.float64)
    return frame


def log_manifest_input(manifest: pd.DataFrame, labels: list[str], *, name: str, context: str) -> str:
    """Log ``manifest`` as a digest-only dataset input of the active run.

    Args:
        manifest: The manifest (needs ``study_uid`` for its hash; it is not logged).
        labels: Label names.
        name: Dataset name (:data:`TRAINING_MANIFEST`, :data:`EVALUATION_SET`).
        context: The input's role on the run (``training``, ``evaluation``).

    Returns:
        The dataset digest (first :data:`DIGEST_CHARS` hex digits of the manifest hash).
    """
    digest = manifest_hash(manifest)[:DIGEST_CHARS]
    frame = phi_free_frame(manifest, labels)
    dataset = mlflow.data.pandas_dataset.from_pandas(frame, name=name, digest=digest)
    counts = frame["split"].value_counts()
    tags = {f"n_{split}": str(int(n)) for split, n in sorted(counts.items())}
    mlflow.log_input(dataset, context=context, tags={"n_studies": str(len(frame)), **tags})
    return digest
