"""The durable record of a scoring job: which study is pending, done (in which part file) or failed.

``DIR/ledger.sqlite`` (WAL, synchronous FULL) holds three tables:

* ``studies(study_uid PRIMARY KEY, locator, report_key, status, attempts, part, updated_at)`` with
  ``status`` in {pending, done, failed} and ``locator`` a JSON list;
* ``dead_letter(study_uid, file, reason, stage, at)``: what could not be scored, and why
  (``study_uid`` is NULL for a file that belongs to no known study, and for a report record, whose
  ``file`` is its locator ``file:line N``); ``stage`` is ``reports``, ``discover``, ``materialize``,
  ``decode`` or ``worker-crash``;
* ``job(key, value)``: model URI / name / version / id, source spec, reports path;
* ``sr_sent(study_uid PRIMARY KEY, status, attempts, reason, at)``: the DICOM SRs sent to a PACS
  (``score --stow``), ``status`` in {sent, failed} (failed: re-sent by the next run).

Exactly-once protocol (see :class:`~medfusion.scoring.writer.PartWriter`): a part file is written to
a temporary name and renamed, then :meth:`Ledger.commit_part` marks its studies done with the part
name in one transaction. :meth:`Ledger.reconcile` (at start-up) deletes part files that no study
references (written, then the job died before the commit); their studies are still pending and get
scored again. A part is therefore either committed with all its studies or absent.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Self

from medfusion.errors import MedfusionError

if TYPE_CHECKING:  # sources brings the DICOM readers (torch): not for readers of the results
    from medfusion.scoring.sources import StudyRef

LEDGER_FILE = "ledger.sqlite"
PENDING, DONE, FAILED = "pending", "done", "failed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    locator TEXT NOT NULL,
    report_key TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    part TEXT,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS studies_status ON studies(status);
CREATE TABLE IF NOT EXISTS dead_letter (
    study_uid TEXT,
    file TEXT,
    reason TEXT NOT NULL,
    stage TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS job (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS sr_sent (
    study_uid TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('sent', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    at TEXT NOT NULL
);
"""


def utc_now() -> str:
    """Current UTC time, ISO 8601 with seconds."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Ledger:
    """One job's ledger (single writer: the job's main process).

    Args:
        out_dir: The job's output folder (created); the ledger is ``out_dir/ledger.sqlite``.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / LEDGER_FILE
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise MedfusionError(f"{self.path}: cannot open the scoring ledger: {exc}") from None

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ job

    def job(self) -> dict[str, str]:
        """The job settings recorded so far."""
        return dict(self.db.execute("SELECT key, value FROM job").fetchall())

    def bind_job(self, settings: dict[str, str], *, identity: tuple[str, ...]) -> None:
        """Record the job's settings; refuse a folder started with another model.

        Args:
            settings: key -> value to record (model URI/name/version/id, source spec...).
            identity: Keys of ``settings`` that must equal the recorded ones (the model's).

        Raises:
            MedfusionError: The folder holds a job with another model.
        """
        recorded = self.job()
        clash = [k for k in identity if k in recorded and recorded[k] != settings.get(k)]
        if clash:
            was = ", ".join(f"{k}={recorded[k]}" for k in clash)
            now = ", ".join(f"{k}={settings.get(k)}" for k in clash)
            raise MedfusionError(
                f"{self.out_dir}: this output folder holds a job scored with another model ({was}); "
                f"this run uses {now}. Use a new --out folder."
            )
        with self._tx():
            self.db.executemany(
                "INSERT OR REPLACE INTO job(key, value) VALUES (?, ?)",
                list(settings.items()),
            )

    # ------------------------------------------------------------------------------------- studies

    def add_studies(self, refs: Iterable[StudyRef], chunk: int = 1000) -> int:
        """Insert newly discovered studies as pending (known ones are left as they are).

        Returns:
            Number of studies seen.
        """
        seen = 0
        rows: list[tuple[str, str, str | None, str]] = []
        for ref in refs:
            rows.append(
                (
                    ref.study_uid,
                    json.dumps(list(ref.locator)),
                    ref.report_key,
                    utc_now(),
                )
            )
            seen += 1
            if len(rows) >= chunk:
                self._insert(rows)
                rows = []
        self._insert(rows)
        return seen

    def _insert(self, rows: list[tuple[str, str, str | None, str]]) -> None:
        if not rows:
            return
        with self._tx():
            self.db.executemany(
                "INSERT OR IGNORE INTO studies(study_uid, locator, report_key, status, attempts, part, updated_at) "
                "VALUES (?, ?, ?, 'pending', 0, NULL, ?)",
                rows,
            )

    def iter_pending(self, chunk: int = 512) -> Iterator[StudyRef]:
        """Stream pending studies in insertion order (keyset pages: safe while rows are updated)."""
        from medfusion.scoring.sources import StudyRef

        last = 0
        while True:
            rows = self.db.execute(
                "SELECT rowid, study_uid, locator, report_key FROM studies WHERE status = 'pending' AND rowid > ? "
                "ORDER BY rowid LIMIT ?",
                (last, chunk),
            ).fetchall()
            if not rows:
                return
            for rowid, uid, locator, key in rows:
                last = rowid
                yield StudyRef(uid, tuple(json.loads(locator)), key)

    def get(self, study_uid: str) -> tuple[StudyRef, str, int, str | None] | None:
        """``(ref, status, attempts, part)`` of one study, or None."""
        from medfusion.scoring.sources import StudyRef

        row = self.db.execute(
            "SELECT study_uid, locator, report_key, status, attempts, part FROM studies WHERE study_uid = ?",
            (study_uid,),
        ).fetchone()
        if row is None:
            return None
        uid, locator, key, status, attempts, part = row
        return StudyRef(uid, tuple(json.loads(locator)), key), status, attempts, part

    def count(self, status: str | None = None) -> int:
        """Number of studies (with ``status`` when given)."""
        if status is None:
            return self.db.execute("SELECT COUNT(*) FROM studies").fetchone()[0]
        return self.db.execute("SELECT COUNT(*) FROM studies WHERE status = ?", (status,)).fetchone()[0]

    def commit_part(self, part: str, study_uids: list[str]) -> None:
        """Mark studies done in ``part`` (one transaction; call after the part file is in place).

        Raises:
            MedfusionError: A study is unknown or not pending (it would be scored twice).
        """
        now = utc_now()
        with self._tx():
            for uid in study_uids:
                cur = self.db.execute(
                    "UPDATE studies SET status = 'done', part = ?, updated_at = ? "
                    "WHERE study_uid = ? AND status = 'pending'",
                    (part, now, uid),
                )
                if cur.rowcount != 1:
                    raise MedfusionError(f"ledger: study {uid} is not pending; refusing to commit {part} twice")

    def add_attempt(self, study_uid: str) -> int:
        """Count one failed attempt (a worker crash) at a study; returns the new count."""
        with self._tx():
            self.db.execute(
                "UPDATE studies SET attempts = attempts + 1, updated_at = ? WHERE study_uid = ?",
                (utc_now(), study_uid),
            )
        return self.db.execute("SELECT attempts FROM studies WHERE study_uid = ?", (study_uid,)).fetchone()[0]

    def fail(self, study_uid: str, file: str | None, reason: str, stage: str) -> None:
        """Mark a study failed and dead-letter it with the file and the reason (one transaction)."""
        with self._tx():
            self.db.execute(
                "UPDATE studies SET status = 'failed', updated_at = ? WHERE study_uid = ? AND status = 'pending'",
                (utc_now(), study_uid),
            )
            self.db.execute(
                "INSERT INTO dead_letter(study_uid, file, reason, stage, at) VALUES (?, ?, ?, ?, ?)",
                (study_uid, file, reason, stage, utc_now()),
            )

    def dead_letter_file(self, file: str, reason: str, stage: str, study_uid: str | None = None) -> None:
        """Dead-letter one file (once per study, file, reason and stage); the study's status is untouched.

        Args:
            file: The file.
            reason: Why it is not used.
            stage: Where it was found out.
            study_uid: The study it belongs to (a copy set aside for another copy of the same
                instance), or None: it belongs to no study.
        """
        with self._tx():
            self.db.execute(
                "INSERT INTO dead_letter(study_uid, file, reason, stage, at) SELECT ?, ?, ?, ?, ? "
                "WHERE NOT EXISTS "
                "(SELECT 1 FROM dead_letter WHERE study_uid IS ? AND file = ? AND reason = ? AND stage = ?)",
                (study_uid, file, reason, stage, utc_now(), study_uid, file, reason, stage),
            )

    def dead_letters(self, stage: str | None = None, limit: int | None = None) -> list[dict[str, str | None]]:
        """Dead-letter rows, oldest first (only ``stage``'s when given; the first ``limit`` when given)."""
        query = "SELECT study_uid, file, reason, stage, at FROM dead_letter"
        args: tuple[object, ...] = ()
        if stage is not None:
            query, args = query + " WHERE stage = ?", (stage,)
        query += " ORDER BY rowid"
        if limit is not None:
            query, args = query + " LIMIT ?", (*args, limit)
        cur = self.db.execute(query, args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def rejected_by_stage(self) -> dict[str, dict[str, int]]:
        """Dead-letter counts by stage, then by reason: stages in order of first appearance, reasons by
        count (most first, ties by first appearance)."""
        rows = self.db.execute(
            "SELECT stage, reason, COUNT(*), MIN(rowid) FROM dead_letter GROUP BY stage, reason"
        ).fetchall()
        first_of_stage: dict[str, int] = {}
        for stage, _, _, first in rows:
            first_of_stage[stage] = min(first, first_of_stage.get(stage, first))
        table: dict[str, dict[str, int]] = {}
        for stage, reason, n, _ in sorted(rows, key=lambda r: (first_of_stage[r[0]], -r[2], r[3])):
            table.setdefault(stage, {})[reason] = n
        return table

    def rejected_by_reason(self) -> dict[str, int]:
        """Dead-letter counts by reason, all stages together (most first)."""
        counts: Counter[str] = Counter()
        for reasons in self.rejected_by_stage().values():
            counts.update(reasons)
        return dict(counts.most_common())

    # -------------------------------------------------------------------------------- SRs sent

    def record_sent(self, study_uid: str, *, ok: bool, reason: str | None = None) -> None:
        """Record one STOW-RS of a study's SR: sent, or failed (with the reason; counted per run)."""
        with self._tx():
            self.db.execute(
                "INSERT INTO sr_sent(study_uid, status, attempts, reason, at) VALUES (?, ?, 1, ?, ?) "
                "ON CONFLICT(study_uid) DO UPDATE SET status = excluded.status, attempts = attempts + 1, "
                "reason = excluded.reason, at = excluded.at",
                (study_uid, "sent" if ok else "failed", reason, utc_now()),
            )

    def unsent(self) -> list[tuple[str, str]]:
        """``(study_uid, part)`` of the done studies whose SR is not recorded as sent, in commit order."""
        return self.db.execute(
            "SELECT s.study_uid, s.part FROM studies s LEFT JOIN sr_sent t ON t.study_uid = s.study_uid "
            "WHERE s.status = 'done' AND s.part IS NOT NULL AND (t.status IS NULL OR t.status != 'sent') "
            "ORDER BY s.part, s.rowid"
        ).fetchall()

    def count_sent(self, status: str = "sent") -> int:
        """SRs recorded with ``status`` (``sent`` or ``failed``)."""
        return self.db.execute("SELECT COUNT(*) FROM sr_sent WHERE status = ?", (status,)).fetchone()[0]

    # --------------------------------------------------------------------------------------- parts

    def committed_parts(self) -> set[str]:
        """Names of the part files some study references."""
        return {row[0] for row in self.db.execute("SELECT DISTINCT part FROM studies WHERE part IS NOT NULL")}

    def reconcile(self, folders: Iterable[Path]) -> list[Path]:
        """Delete part files (and leftover temporary files) in ``folders`` that no study references.

        Part files are matched by stem: ``results/part-000003.parquet``, ``fhir/part-000003.ndjson``
        and the folder ``sr/part-000003/`` (its DICOM SRs) all belong to part ``part-000003``.

        Returns:
            The files deleted.
        """
        committed = self.committed_parts()
        deleted = []
        for folder in folders:
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                orphan = path.name.startswith(".") or (path.name.startswith("part-") and path.stem not in committed)
                if orphan and path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)  # a part's folder (``sr/part-N/``) or its temporary one
                    deleted.append(path)
                elif orphan and path.is_file():
                    path.unlink()
                    deleted.append(path)
        return deleted

    def _tx(self) -> _Transaction:
        return _Transaction(self.db)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
