"""Batch scoring of archives: sources -> ledger -> engines (local pool or Ray Data) -> Parquet / FHIR.

Readers of a job's output folder (e.g. the review app) use :func:`read_results` and
:func:`study_inputs`; :func:`medfusion.scoring.job.run_score` runs a job. See ``docs/scoring.md``.

* :mod:`.sources` (DICOM folder trees, reports) and :mod:`.dicomweb` (QIDO-RS / WADO-RS): where studies
  come from; :mod:`.resolve`: a model URI or folder -> a model folder and its provenance.
* :mod:`.ledger`: the exactly-once record of the job (pending, done, dead letters); :mod:`.lock`: one
  job per output folder.
* :mod:`.engine_local` (process pool) and :mod:`.engine_ray` (Ray Data): decode and preprocess with the
  model's :class:`~medfusion.processing.preprocessor.Preprocessor`, batched inference; both take an
  :class:`~medfusion.scoring.job.EngineContext`; the local engine's pool tasks are sized by :mod:`.tasks`,
  its inference threads by :mod:`.threads`, its work folders made by :mod:`.workdir`.
* :mod:`.writer`: :class:`~medfusion.results.ResultRow` -> Parquet parts (and FHIR NDJSON through
  :mod:`medfusion.fhir.write`, DICOM SRs through :mod:`medfusion.dicom_sr`); :mod:`.stow`: the SRs sent to
  a PACS (STOW-RS) when their part commits; :mod:`.job`: the job end to end and its summary.

May import: :mod:`medfusion.ingest` (DICOM, reports, linkage, records), :mod:`medfusion.processing`,
:mod:`medfusion.models.card`, :mod:`medfusion.inference`, :mod:`medfusion.results`,
:mod:`medfusion.fhir.write`, :mod:`medfusion.dicom_sr` (``--sr``), :mod:`medfusion.tracking.store` (MLflow model URIs),
:mod:`medfusion.privacy`, :mod:`medfusion.processes`, :mod:`medfusion.errors`. Never training, explain
or review (the review app imports this package). Only the two readers below are defined here; their
imports are lazy so that ``import medfusion.scoring`` stays cheap.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from medfusion.inference import StudyInput
    from medfusion.scoring.sources import ReportIndex


def read_results(out_dir: str | Path) -> pd.DataFrame:
    """The results of a job: exactly one row per scored study (committed parts only).

    Columns: those of :func:`medfusion.results.result_columns`: ``study_uid``, ``prob_<label>``...,
    ``decision_<label>``..., ``threshold_<label>``..., ``model_name``, ``model_version``, ``model_id``,
    ``medfusion_version``, ``scored_at`` (UTC ISO), ``status`` (``UNVERIFIED``).

    Raises:
        MedfusionError: ``out_dir`` holds no scoring ledger, or a study appears twice (a bug).
    """
    from medfusion.errors import MedfusionError
    from medfusion.scoring.ledger import LEDGER_FILE, Ledger
    from medfusion.scoring.writer import RESULTS_DIR, read_parts

    out = Path(out_dir)
    if not (out / LEDGER_FILE).is_file():
        raise MedfusionError(f"{out}: not a scoring output folder (no {LEDGER_FILE})")
    with Ledger(out) as ledger:
        committed = ledger.committed_parts()
    frame = read_parts(out / RESULTS_DIR, committed)
    duplicated = frame["study_uid"][frame["study_uid"].duplicated()]
    if len(duplicated):
        raise MedfusionError(f"{out}: study {duplicated.iloc[0]} has more than one result row")
    return frame.sort_values("study_uid", ignore_index=True)


def study_inputs(out_dir: str | Path, study_uid: str) -> StudyInput:
    """A scored study's inputs again: local DICOM paths (from the ledger) and its report text.

    Folder sources only (DICOMweb studies are not kept on disk).

    Raises:
        MedfusionError: No such study in the job, or the job's source is not a folder.
    """
    from medfusion.errors import MedfusionError
    from medfusion.inference import StudyInput
    from medfusion.scoring.ledger import Ledger

    with Ledger(out_dir) as ledger:
        job = ledger.job()
        found = ledger.get(study_uid)
    if found is None:
        raise MedfusionError(f"{out_dir}: study {study_uid} is not part of this scoring job")
    if job.get("source_kind") != "folder":
        raise MedfusionError(
            f"{out_dir}: study inputs are only kept for folder sources (this job read {job.get('source_kind')})"
        )
    ref = found[0]
    text = _report_index(job.get("reports") or "").text(ref)
    return StudyInput(image_paths=list(ref.locator), report_text=text)


@functools.lru_cache(maxsize=4)
def _report_index(reports: str) -> ReportIndex:
    from medfusion.scoring.sources import ReportIndex

    return ReportIndex.from_path(reports or None)


__all__ = ["read_results", "study_inputs"]
