"""A scoring job end to end: check the inputs, lock the output folder, resolve the model, open the
ledger, discover, run an engine, summarise.

The source, the reports and the output folder are checked (and the folder locked against a second
job) before the model is touched, so a mistake in them fails at once, with nothing downloaded.

>>> summary = run_score(ScoreOptions(source="archive/", reports=Path("reports.ndjson"),
...                                  model="models:/medfusion@champion", out_dir=Path("scores")))

Re-running the same job (same ``out_dir``) resumes it: studies already done are not scored again,
part files written but never committed are deleted and their studies scored again, and the files a
killed run had retrieved are removed from its work folder (:mod:`medfusion.scoring.workdir`). A
different model into the same ``out_dir`` is refused.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medfusion.dicom_sr.codes import CodeMap
from medfusion.dicom_sr.source import SourceStudy
from medfusion.errors import MedfusionError
from medfusion.inference import Prediction
from medfusion.ingest.records import join_locator, split_locator
from medfusion.models.card import ModelCard
from medfusion.models.model import resolve_device
from medfusion.precision import AMP_MODES, resolve_amp
from medfusion.privacy import redact
from medfusion.results import ResultRow
from medfusion.scoring.ledger import DONE, FAILED, PENDING, Ledger
from medfusion.scoring.lock import OutputLock
from medfusion.scoring.resolve import ResolvedModel, resolve_model
from medfusion.scoring.sources import (
    FolderSource,
    ReportIndex,
    StudySource,
    open_source,
)
from medfusion.scoring.workdir import job_workdir
from medfusion.scoring.writer import FHIR_DIR, RESULTS_DIR, SR_DIR, PartWriter

if TYPE_CHECKING:
    from medfusion.scoring.dicomweb import DicomwebSource

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
ENGINES = ("local", "ray")
#: Dead-letter stage of a study whose DICOM SR could not be built.
SR_STAGE = "sr"
#: Dead-letter stage of report records that could not be read (``file:line N`` and the reason).
REPORTS_STAGE = "reports"
#: Report rejections listed one by one in ``summary.json`` (all of them are in the ledger).
SUMMARY_MAX_REPORT_REJECTIONS = 1000
#: Report rejections printed by :meth:`ScoreSummary.text`.
PRINTED_REPORT_REJECTIONS = 5


@dataclass
class ScoreOptions:
    """Settings of one scoring job.

    Attributes:
        source: A folder, a DICOMweb URL, or a :class:`StudySource`.
        out_dir: Output folder (ledger, results, fhir, summary).
        model: Model folder or MLflow URI (``models:/name@alias``...).
        reports: Report file or folder (FHIR NDJSON/Bundle/JSON, CSV, txt), or None.
        engine: ``local`` (process pool) or ``ray`` (Ray Data).
        workers: Decode/preprocess worker processes (Ray: preprocess tasks in parallel).
        batch_size: Studies per forward pass.
        part_size: Studies per results part file (and per ledger commit).
        fhir: Also write FHIR DiagnosticReport/Observation NDJSON.
        sr: Also write one DICOM SR per scored study (``sr/part-N/<study_uid>.dcm``; local engine).
        sr_codes: A site's SR code-map file (:meth:`medfusion.dicom_sr.codes.CodeMap.from_file`), or None.
        stow: DICOMweb root of a PACS to send each SR to (STOW-RS) when its part commits, or None
            (needs ``sr``; credentials from the environment as for reading; see :mod:`.stow`).
        stow_attempts: Tries per SR sent (then it is recorded as failed and re-sent by the next run).
        device: ``auto``, ``cpu`` or ``cuda[:n]`` for inference.
        amp: Mixed precision of inference (:mod:`medfusion.precision`; ``auto``: bfloat16 on a GPU that
            supports it, else float16; float32 on CPU).
        max_attempts: Worker crashes on one study before it is dead-lettered.
        file_timeout_s: Longest time spent on one file, seconds: a header read at discovery (the file is
            rejected) or a step of a worker (the study is dead-lettered; local engine). None: no bound.
        tracking_uri: MLflow store holding the model (None: MLflow's default).
        progress: Show a rich progress bar.
        ray_address: Ray cluster address (``auto``, ``ray://host:10001``); None starts a local Ray.
        scorers: Ray scorer actors (default: one per GPU, else 1).
    """

    source: str | StudySource
    out_dir: Path
    model: str
    reports: Path | None = None
    engine: str = "local"
    workers: int = 2
    batch_size: int = 16
    part_size: int = 256
    fhir: bool = False
    sr: bool = False
    sr_codes: Path | None = None
    stow: str | None = None
    stow_attempts: int = 4
    device: str = "auto"
    amp: str = "auto"
    max_attempts: int = 2
    file_timeout_s: float | None = 60.0
    tracking_uri: str | None = None
    progress: bool = False
    ray_address: str | None = None
    scorers: int | None = None


@dataclass
class ScoreSummary:
    """What a job did (saved as ``summary.json``).

    Attributes:
        model: name, version, id and URI of the model.
        engine: Engine used.
        discovered: Studies in the ledger (all runs).
        scored: Studies done (all runs).
        scored_this_run: Studies scored by this run.
        failed: Studies dead-lettered (all runs).
        pending: Studies left pending (0 when the job finished).
        rejected_files: Files dead-lettered at discovery (belong to no scorable study).
        dead_letters: Every dead-letter row of the ledger counted by stage, then reason
            (``{"discover": {"not a DICOM file": 2}, "decode": {...}, "reports": {...}}``); the printed
            table shows exactly these rows.
        report_rejections: Report records that could not be used, oldest first (at most
            :data:`SUMMARY_MAX_REPORT_REJECTIONS`; all are in the ledger): ``{"file": f, "line": 3,
            "reason": r}`` (``row`` for CSV rows, ``entry`` for Bundle entries, neither for a whole file).
        elapsed_s: Wall time of this run.
        studies_per_s: ``scored_this_run / scoring time`` (discovery, model and worker start-up excluded).
        discovery_s: Time spent on discovery.
        orphan_parts_deleted: Part files found uncommitted at start-up and deleted.
        srs_sent_this_run: DICOM SRs stored in the PACS by this run (``stow``).
        srs_unsent: Committed SRs not (yet) stored in the PACS: their last send failed (``stow``).
    """

    model: dict[str, str]
    engine: str
    discovered: int
    scored: int
    scored_this_run: int
    failed: int
    pending: int
    rejected_files: int
    dead_letters: dict[str, dict[str, int]] = field(default_factory=dict)
    report_rejections: list[dict[str, str | int]] = field(default_factory=list)
    elapsed_s: float = 0.0
    studies_per_s: float = 0.0
    discovery_s: float = 0.0
    orphan_parts_deleted: int = 0
    srs_sent_this_run: int = 0
    srs_unsent: int = 0

    @property
    def rejected_by_reason(self) -> dict[str, int]:
        """Dead-letter counts by reason, all stages together."""
        counts: dict[str, int] = {}
        for reasons in self.dead_letters.values():
            for reason, n in reasons.items():
                counts[reason] = counts.get(reason, 0) + n
        return counts

    def text(self) -> str:
        """Human-readable summary: counts, throughput, the dead-letter table, the first report rejections."""
        lines = [
            f"model {self.model['name']} version {self.model['version']} ({self.engine} engine)",
            (
                f"studies: {self.discovered} found, {self.scored} scored ({self.scored_this_run} this run), "
                f"{self.failed} dead-lettered, {self.pending} pending"
            ),
            f"throughput: {self.studies_per_s:.1f} studies/s "
            f"({self.elapsed_s:.1f} s in all, discovery {self.discovery_s:.1f} s)",
        ]
        if self.srs_sent_this_run or self.srs_unsent:
            lines.append(
                f"DICOM SRs sent to the PACS: {self.srs_sent_this_run} this run, "
                f"{self.srs_unsent} not sent (the next run sends them again)"
            )
        lines += dead_letter_table(self.dead_letters)
        if self.report_rejections:
            shown = self.report_rejections[:PRINTED_REPORT_REJECTIONS]
            total = sum(self.dead_letters.get(REPORTS_STAGE, {}).values())
            lines.append(f"report records rejected (first {len(shown)} of {total}):")
            lines += [f"  {join_locator(r)}: {r['reason']}" for r in shown]
        return "\n".join(lines)


def dead_letter_table(table: dict[str, dict[str, int]]) -> list[str]:
    """The lines of the dead-letter table: one row per (stage, reason) with its count, then the total.

    Args:
        table: ``{stage: {reason: count}}`` as in :attr:`ScoreSummary.dead_letters`.
    """
    if not table:
        return ["dead letters: none"]
    width = max(len("stage"), *(len(stage) for stage in table))
    lines = ['dead letters by stage and reason (rows of ledger.sqlite; "dead_letters" in summary.json):']
    lines.append(f"  {'stage':<{width}}  {'count':>6}  reason")
    for stage, reasons in table.items():
        lines += [f"  {stage:<{width}}  {n:>6}  {reason}" for reason, n in reasons.items()]
    lines.append(f"  {'total':<{width}}  {sum(n for r in table.values() for n in r.values()):>6}")
    return lines


@dataclass
class EngineContext:
    """What an engine needs and reports to (the ledger and writer stay in the main process).

    Attributes:
        source: The study source (pickled into workers).
        ledger: The job's ledger.
        writer: The part writer.
        model: The resolved model.
        labels: Label names.
        reports: Report index (looked up in the main process).
        options: Job options.
        advance: Called once per study finished (scored or dead-lettered).
        sr_codes: Finding codes of the SRs (None: no SR is written).
        work_dir: The job's work folder, for the studies' retrieved files
            (:func:`~medfusion.scoring.workdir.job_workdir`; None: the system's temporary directory).
    """

    source: StudySource
    ledger: Ledger
    writer: PartWriter
    model: ResolvedModel
    labels: list[str]
    reports: ReportIndex
    options: ScoreOptions
    advance: Callable[[], None] = lambda: None
    sr_codes: CodeMap | None = None
    work_dir: Path | None = None
    scored: int = 0
    started_at: float | None = None

    @property
    def work_root(self) -> str | None:
        """:attr:`work_dir` as the workers take it (None: the system's temporary directory)."""
        return None if self.work_dir is None else str(self.work_dir)

    def started(self) -> None:
        """Workers are up: throughput is measured from now on."""
        self.started_at = time.perf_counter()

    def scored_prediction(self, study_uid: str, prediction: Prediction, source: SourceStudy | None = None) -> None:
        """Hand a prediction to the writer, as a result row with the model's provenance.

        With SRs on, ``source`` (the study's headers) builds the study's SR here; a study whose SR
        cannot be built is dead-lettered (stage ``sr``) instead of being written without one.
        """
        row = ResultRow.from_prediction(prediction, self.model.provenance, study_uid=study_uid)
        report = None
        if self.sr_codes is not None:
            from medfusion.dicom_sr.write import build_sr

            try:
                if source is None:
                    raise MedfusionError("the study's source headers were not read")
                report = build_sr(row, source, self.sr_codes)
            except (MedfusionError, ValueError, TypeError, AttributeError) as exc:
                self.rejected(study_uid, None, f"cannot build the DICOM SR: {redact(str(exc))}", SR_STAGE)
                return
        self.writer.add(row, report)
        self.scored += 1
        self.advance()

    def rejected(self, study_uid: str, file: str | None, reason: str, stage: str) -> None:
        """Dead-letter a study; the job carries on."""
        self.ledger.fail(study_uid, file, reason, stage)
        log.warning("study %s dead-lettered (%s): %s", study_uid, stage, reason)
        self.advance()


def run_score(options: ScoreOptions) -> ScoreSummary:
    """Run (or resume) a scoring job; see the module docstring.

    Returns:
        The summary (also written to ``out_dir/summary.json``).

    Raises:
        MedfusionError: Bad options; a missing or unreadable source or report file; an output folder
            that cannot be created or written, or that another job is writing to (checked in this
            order, before the model is resolved); an unknown model; a folder started with another model.
    """
    if options.engine not in ENGINES:
        raise MedfusionError(f"unknown engine {options.engine!r} (use {', '.join(ENGINES)})")
    if options.workers < 1 or options.batch_size < 1 or options.part_size < 1:
        raise MedfusionError("--workers, --batch-size and --part-size must be at least 1")
    if options.amp not in AMP_MODES:
        raise MedfusionError(f"unknown --amp {options.amp!r} (use {', '.join(AMP_MODES)})")
    if options.engine == "local":  # this process runs inference: a device or precision it lacks, now
        resolve_amp(options.amp, resolve_device(options.device))
    if options.sr and options.engine != "local":
        raise MedfusionError("--sr is written by the local engine only (use --engine local)")
    sr_codes = CodeMap.from_file(options.sr_codes) if options.sr else None
    if options.stow and not options.sr:
        raise MedfusionError("--stow sends the DICOM SRs: add --sr")
    pacs = None
    if options.stow:
        from medfusion.scoring.dicomweb import DicomwebSource

        pacs = DicomwebSource(options.stow, max_attempts=max(1, options.stow_attempts))
    started = time.perf_counter()
    out = Path(options.out_dir)
    # The user's inputs first (seconds at most), the model (tens of seconds, a download) last.
    source = (
        open_source(options.source, file_timeout_s=options.file_timeout_s)
        if isinstance(options.source, str)
        else options.source
    )
    reports = ReportIndex.from_path(options.reports)
    with OutputLock(out):
        summary = _run_locked(options, out, source, reports, started, sr_codes, pacs)
        (out / SUMMARY_FILE).write_text(json.dumps(asdict(summary), indent=2) + "\n", encoding="utf-8")
    return summary


def _run_locked(
    options: ScoreOptions,
    out: Path,
    source: StudySource,
    reports: ReportIndex,
    started: float,
    sr_codes: CodeMap | None = None,
    pacs: DicomwebSource | None = None,
) -> ScoreSummary:
    """The job once its inputs are checked and ``out`` is locked."""
    model = resolve_model(options.model, tracking_uri=options.tracking_uri, cache_dir=out / "model")
    labels = list(ModelCard.load(model.model_dir).labels)
    with Ledger(out) as ledger:
        ledger.bind_job(
            {
                "model_uri": model.uri,
                "model_name": model.name,
                "model_version": model.version,
                "model_id": model.model_id,
                "source": _source_spec(options.source, source),
                "source_kind": source.name,
                "reports": str(Path(options.reports).resolve()) if options.reports else "",
            },
            identity=("model_name", "model_version", "model_id"),
        )
        orphans = ledger.reconcile([out / RESULTS_DIR, out / FHIR_DIR, out / SR_DIR])
        if orphans:
            log.warning(
                "deleted %d uncommitted part file(s) from an interrupted run",
                len(orphans),
            )
        for rejection in reports.rejected:
            ledger.dead_letter_file(rejection.source, rejection.reason, REPORTS_STAGE)
        discovered = ledger.add_studies(source.discover())
        rejected_files = list(getattr(source, "rejected", []) or [])
        for rejection in rejected_files:
            ledger.dead_letter_file(rejection.source, rejection.reason, "discover")
        discovery_s = time.perf_counter() - started
        log.info("discovered %d study(ies); %d pending", discovered, ledger.count(PENDING))
        stow = None
        if pacs is not None:
            from medfusion.scoring.stow import SrStow

            stow = SrStow(pacs, ledger, out / SR_DIR)
            stow.resend()
        writer = PartWriter(
            out,
            ledger,
            part_size=options.part_size,
            fhir=options.fhir,
            sr=sr_codes is not None,
            committed=stow.send if stow is not None else None,
        )
        ctx = EngineContext(source, ledger, writer, model, labels, reports, options, sr_codes=sr_codes)
        scoring_started = time.perf_counter()
        with job_workdir(out) as work_dir, _progress(options.progress, ledger.count(PENDING)) as advance:
            ctx.work_dir, ctx.advance = work_dir, advance
            if options.engine == "ray":
                from medfusion.scoring.engine_ray import run_ray

                run_ray(ctx)
            else:
                from medfusion.scoring.engine_local import run_local

                run_local(ctx)
            writer.flush()
        scoring_s = time.perf_counter() - (ctx.started_at or scoring_started)
        dead_letters = ledger.rejected_by_stage()
        report_rows = ledger.dead_letters(stage=REPORTS_STAGE, limit=SUMMARY_MAX_REPORT_REJECTIONS)
        return ScoreSummary(
            model={
                "name": model.name,
                "version": model.version,
                "id": model.model_id,
                "uri": model.uri,
            },
            engine=options.engine,
            discovered=ledger.count(),
            scored=ledger.count(DONE),
            scored_this_run=ctx.scored,
            failed=ledger.count(FAILED),
            pending=ledger.count(PENDING),
            rejected_files=sum(dead_letters.get("discover", {}).values()),
            dead_letters=dead_letters,
            report_rejections=[{**split_locator(str(r["file"])), "reason": str(r["reason"])} for r in report_rows],
            elapsed_s=round(time.perf_counter() - started, 3),
            studies_per_s=round(ctx.scored / scoring_s, 3) if scoring_s > 0 else 0.0,
            discovery_s=round(discovery_s, 3),
            orphan_parts_deleted=len(orphans),
            srs_sent_this_run=stow.sent if stow is not None else 0,
            srs_unsent=ledger.count_sent("failed") if stow is not None else 0,
        )


def _source_spec(spec: str | StudySource, source: StudySource) -> str:
    if isinstance(spec, str):
        return spec
    if isinstance(source, FolderSource):
        return str(source.root)
    return str(getattr(source, "url", type(source).__name__))


class _progress:
    """A rich progress bar with studies/s and ETA (or a no-op); the context value advances it by one."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total
        self.bar: Any = None

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled:
            return lambda: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("scoring"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        self.bar.start()
        task = self.bar.add_task("scoring", total=self.total, rate="")

        def advance() -> None:
            t = self.bar.tasks[0]
            rate = f"{t.speed:.1f} studies/s" if t.speed else ""
            self.bar.update(task, advance=1, rate=rate)

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
