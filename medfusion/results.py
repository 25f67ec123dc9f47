"""The one result schema: what every output says about a scored study.

A :class:`ResultRow` holds one study's per-label probabilities and thresholds and the
:class:`Provenance` of the model that produced them (registered name and version, model id,
medfusion version, status ``UNVERIFIED``, as MONAI Deploy writes it), with the time it was scored.
Every output is built from it: the Parquet parts of a scoring job
(:mod:`medfusion.scoring.writer`), the MLflow pyfunc's output (:mod:`medfusion.tracking.pyfunc`),
the FHIR results (:func:`medfusion.fhir.write.result_resources`) and the review app, which reads
the Parquet rows back with :meth:`ResultRow.from_record`.

Decisions are never computed anywhere else: :func:`decide` (``probability >= threshold``; a NaN
probability is never positive) is the only place a probability becomes a call.

Flat records (:meth:`ResultRow.to_record`) have the columns of :func:`result_columns`, in order:
``study_uid`` (when known), ``prob_<label>``..., ``decision_<label>``..., ``threshold_<label>``...,
``model_name``, ``model_version``, ``model_id``, ``medfusion_version``, ``scored_at`` (UTC ISO
8601), ``status`` and, for the pyfunc, ``error`` (empty, or why the study could not be scored).

Imports: numpy, the standard library and :mod:`medfusion.errors` only, so that every output module
(scoring, tracking, fhir, review, training metrics) may import this one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from medfusion import __version__
from medfusion.errors import MedfusionError

if TYPE_CHECKING:
    from medfusion.inference import Prediction

#: Status of every result (as MONAI Deploy writes it): not verified by a clinician.
STATUS = "UNVERIFIED"
PROB, DECISION, THRESHOLD = "prob_", "decision_", "threshold_"
#: Provenance columns, in record order.
PROVENANCE_COLUMNS = ("model_name", "model_version", "model_id", "medfusion_version", "scored_at", "status")
ERROR_COLUMN = "error"


def decide(probabilities: npt.ArrayLike, thresholds: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """The model's calls: ``probabilities >= thresholds``, elementwise (NaN is never positive).

    Args:
        probabilities: (..., L) probabilities (a scalar works too).
        thresholds: (L,) or broadcastable thresholds.

    Returns:
        (..., L) bool.
    """
    return np.asarray(probabilities, dtype=np.float64) >= np.asarray(thresholds, dtype=np.float64)


def utc_now() -> str:
    """Current UTC time, ISO 8601 with seconds (the ``scored_at`` format)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def result_columns(labels: Sequence[str], *, study_uid: bool = True, error: bool = False) -> list[tuple[str, str]]:
    """The columns of a result record and their types (``string``, ``double`` or ``boolean``).

    Args:
        labels: Label names, in output order.
        study_uid: Include the leading ``study_uid`` column.
        error: Include the trailing ``error`` column (pyfunc output).

    Returns:
        ``[(name, type), ...]`` in record order.
    """
    columns = [("study_uid", "string")] if study_uid else []
    columns += [(f"{PROB}{label}", "double") for label in labels]
    columns += [(f"{DECISION}{label}", "boolean") for label in labels]
    columns += [(f"{THRESHOLD}{label}", "double") for label in labels]
    columns += [(name, "string") for name in PROVENANCE_COLUMNS]
    if error:
        columns.append((ERROR_COLUMN, "string"))
    return columns


@dataclass(frozen=True)
class Provenance:
    """Which model produced a result, and that nobody has verified it.

    Attributes:
        model_name: Registered model name (the folder's config name for a local folder).
        model_version: Registered version (``run:<id>`` when not registered, ``local`` for a folder).
        model_id: The model folder's id (``<config name>-<weights hash>``).
        medfusion_version: The medfusion release that scored.
        status: Always :data:`STATUS` for model output.
    """

    model_name: str
    model_version: str
    model_id: str
    medfusion_version: str = __version__
    status: str = STATUS

    @property
    def model_version_code(self) -> str:
        """``<model_name>/<model_version>``: the model as one code (FHIR tags, identifiers)."""
        return f"{self.model_name}/{self.model_version}"


@dataclass(frozen=True, eq=False)
class ResultRow:
    """One study's result.

    Attributes:
        labels: (L,) label names, in output order.
        probabilities: (L,) float64 calibrated probabilities (NaN when ``error`` is set).
        thresholds: (L,) float64 decision thresholds.
        provenance: The model that scored.
        study_uid: StudyInstanceUID, or None when the caller keeps rows in input order (pyfunc).
        scored_at: UTC ISO 8601 time of scoring.
        error: Why the study could not be scored, or None.
    """

    labels: tuple[str, ...]
    probabilities: np.ndarray
    thresholds: np.ndarray
    provenance: Provenance
    study_uid: str | None = None
    scored_at: str = field(default_factory=utc_now)
    error: str | None = None

    def __post_init__(self) -> None:
        labels = tuple(str(label) for label in self.labels)
        probs = np.asarray(self.probabilities, dtype=np.float64).reshape(-1)  # (L,)
        thresholds = np.asarray(self.thresholds, dtype=np.float64).reshape(-1)  # (L,)
        if probs.shape != (len(labels),) or thresholds.shape != (len(labels),):
            raise ValueError(f"{len(labels)} labels but {probs.size} probabilities and {thresholds.size} thresholds")
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "probabilities", probs)
        object.__setattr__(self, "thresholds", thresholds)

    @property
    def decisions(self) -> npt.NDArray[np.bool_]:
        """(L,) bool: :func:`decide` of the probabilities and thresholds."""
        return decide(self.probabilities, self.thresholds)

    @classmethod
    def from_prediction(
        cls, prediction: Prediction, provenance: Provenance, *, study_uid: str | None = None
    ) -> ResultRow:
        """The row of a :class:`~medfusion.inference.Prediction` (its ``error`` carried along)."""
        return cls(
            labels=tuple(prediction.labels),
            probabilities=prediction.probabilities,
            thresholds=prediction.thresholds,
            provenance=provenance,
            study_uid=study_uid,
            error=prediction.error,
        )

    def to_record(self, *, with_error: bool = False) -> dict[str, Any]:
        """The flat record (columns of :func:`result_columns`; ``study_uid`` only when set)."""
        record: dict[str, Any] = {} if self.study_uid is None else {"study_uid": self.study_uid}
        record.update({f"{PROB}{label}": float(p) for label, p in zip(self.labels, self.probabilities, strict=True)})
        record.update({f"{DECISION}{label}": bool(d) for label, d in zip(self.labels, self.decisions, strict=True)})
        record.update({f"{THRESHOLD}{label}": float(t) for label, t in zip(self.labels, self.thresholds, strict=True)})
        p = self.provenance
        record.update(
            model_name=p.model_name,
            model_version=p.model_version,
            model_id=p.model_id,
            medfusion_version=p.medfusion_version,
            scored_at=self.scored_at,
            status=p.status,
        )
        if with_error:
            record[ERROR_COLUMN] = self.error or ""
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any], labels: Sequence[str]) -> ResultRow:
        """Read a flat record back (a Parquet row, a pandas Series).

        Raises:
            MedfusionError: A column of the schema is missing.
        """
        names = [f"{PROB}{label}" for label in labels] + [f"{THRESHOLD}{label}" for label in labels]
        missing = [n for n in ("study_uid", *names, *PROVENANCE_COLUMNS) if n not in record]
        if missing:
            raise MedfusionError(f"result row lacks column(s) {', '.join(missing)}")
        error = record.get(ERROR_COLUMN)
        return cls(
            labels=tuple(labels),
            probabilities=np.array([float(record[f"{PROB}{label}"]) for label in labels]),
            thresholds=np.array([float(record[f"{THRESHOLD}{label}"]) for label in labels]),
            provenance=Provenance(
                model_name=str(record["model_name"]),
                model_version=str(record["model_version"]),
                model_id=str(record["model_id"]),
                medfusion_version=str(record["medfusion_version"]),
                status=str(record["status"]),
            ),
            study_uid=str(record["study_uid"]),
            scored_at=str(record["scored_at"]),
            error=str(error) if isinstance(error, str) and error else None,
        )


def labels_of(columns: Sequence[str] | Any) -> list[str]:
    """Label names of a result table (its ``prob_<label>`` columns, in column order)."""
    return [c[len(PROB) :] for c in columns if str(c).startswith(PROB)]
