"""What the app reads: the scoring output, one study's inputs, and the model that scored them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from medfusion.errors import MedfusionError
from medfusion.review.settings import ReviewSettings

if TYPE_CHECKING:
    from medfusion.inference import Predictor, StudyInput


def read_scores(results_dir: str | Path) -> pd.DataFrame:
    """The scoring output, one row per study (:func:`medfusion.scoring.read_results`)."""
    from medfusion.scoring import read_results

    return read_results(results_dir)


def study_input(results_dir: str | Path, study_uid: str) -> StudyInput:
    """The study's local DICOM paths and report text (:func:`medfusion.scoring.study_inputs`)."""
    from medfusion.scoring import study_inputs

    return study_inputs(results_dir, study_uid)


def model_uri_for(settings: ReviewSettings, results: pd.DataFrame) -> str:
    """The model to explain with: the configured one, else the exact version that scored.

    A registered version is addressed as ``models:/<name>/<version>`` (an alias may have moved
    since scoring); a local folder or an unregistered run falls back to the job's recorded URI.

    Raises:
        MedfusionError: No model is configured and the scoring output does not say which scored.
    """
    if settings.model_uri:
        return settings.model_uri
    versions = results[["model_name", "model_version"]].drop_duplicates() if len(results) else pd.DataFrame()
    if len(versions) == 1:
        name, version = versions.iloc[0]
        if str(version).isdigit():
            return f"models:/{name}/{version}"
    from medfusion.scoring.ledger import Ledger

    with Ledger(settings.results_dir) as ledger:
        job = ledger.job()
    uri = job.get("model_uri")
    if not uri:
        raise MedfusionError(f"{settings.results_dir}: cannot tell which model scored these results; pass --model")
    return uri


@dataclass(frozen=True)
class ReviewModel:
    """The loaded model, its registry identity and its folder (where its explanation checks live)."""

    predictor: Predictor
    name: str
    version: str
    uri: str
    model_dir: Path | None = None


def load_review_model(uri: str, tracking_uri: str | None, cache_dir: Path | None = None) -> ReviewModel:
    """Resolve (:func:`medfusion.scoring.resolve.resolve_model`) and load a model for explanations.

    Pass the scoring output's ``model`` folder as ``cache_dir`` to reuse the copy the job downloaded.
    """
    from medfusion.inference import Predictor
    from medfusion.scoring.resolve import resolve_model

    resolved = resolve_model(uri, tracking_uri=tracking_uri, cache_dir=cache_dir)
    return ReviewModel(
        Predictor.from_dir(resolved.model_dir), resolved.name, resolved.version, uri, Path(resolved.model_dir)
    )
