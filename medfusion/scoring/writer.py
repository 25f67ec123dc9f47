"""The part writer: result rows (:class:`~medfusion.results.ResultRow`) -> Parquet (and FHIR NDJSON) parts.

A part is made durable before the ledger hears of it: the file is written under a temporary name
(``.part-N...``), fsynced, renamed to ``part-N.parquet`` and the folder fsynced; only then does
:meth:`~medfusion.scoring.ledger.Ledger.commit_part` mark its studies done. With ``fhir`` the matching
``fhir/part-N.ndjson`` (:func:`medfusion.fhir.write.result_ndjson_text`) is written the same way, before
the Parquet part. With ``sr`` the part's DICOM SRs (built by the job,
:func:`medfusion.dicom_sr.write.build_sr`) are written first, one ``<study_uid>.dcm`` per study, into
``sr/.part-N.tmp/``; each file is fsynced, the folder renamed to ``sr/part-N/`` and ``sr/`` fsynced. An
SR folder whose part was never committed is deleted at start-up like any orphan part
(:meth:`~medfusion.scoring.ledger.Ledger.reconcile`), so the SRs of committed parts are exactly one per
scored study.

Imports: pandas, pydicom, :mod:`medfusion.results`, :mod:`medfusion.fhir.write`,
:mod:`medfusion.dicom_sr.write`, :mod:`medfusion.scoring.ledger`.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from pydicom.dataset import Dataset

from medfusion.results import ResultRow
from medfusion.scoring.ledger import Ledger

RESULTS_DIR = "results"
FHIR_DIR = "fhir"
SR_DIR = "sr"
_PART = re.compile(r"^part-(\d{6})\.")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _durable_replace(tmp: Path, final: Path) -> None:
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    _fsync_dir(final.parent)


class PartWriter:
    """Buffers result rows and commits them ``part_size`` at a time.

    Args:
        out_dir: The job's output folder.
        ledger: The job's ledger (already reconciled).
        part_size: Studies per part file.
        fhir: Also write FHIR NDJSON parts.
        sr: Also write each part's DICOM SRs (every row added comes with its SR).
        committed: Called with the part name and its study UIDs once a part is committed (e.g. to
            send its SRs to a PACS).
    """

    def __init__(
        self,
        out_dir: Path,
        ledger: Ledger,
        *,
        part_size: int = 256,
        fhir: bool = False,
        sr: bool = False,
        committed: Callable[[str, list[str]], None] | None = None,
    ) -> None:
        self.results_dir = out_dir / RESULTS_DIR
        self.fhir_dir = out_dir / FHIR_DIR
        self.sr_dir = out_dir / SR_DIR
        self.results_dir.mkdir(parents=True, exist_ok=True)
        if fhir:
            self.fhir_dir.mkdir(parents=True, exist_ok=True)
        if sr:
            self.sr_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = ledger
        self.part_size = max(1, part_size)
        self.fhir = fhir
        self.sr = sr
        self.committed = committed
        self.rows: list[ResultRow] = []
        self.reports: list[Dataset] = []
        self.written = 0
        existing = [int(m[1]) for p in self.results_dir.iterdir() if (m := _PART.match(p.name))]
        self.next_index = max(existing, default=-1) + 1

    def add(self, row: ResultRow, report: Dataset | None = None) -> None:
        """Buffer one scored study's row (and its SR when the writer writes SRs); commit a part when the
        buffer is full.

        Raises:
            ValueError: SRs are on and ``report`` is None (or off and it is not).
        """
        if (report is not None) != self.sr:
            raise ValueError(f"study {row.study_uid}: an SR {'is required' if self.sr else 'was not asked for'}")
        self.rows.append(row)
        if report is not None:
            self.reports.append(report)
        if len(self.rows) >= self.part_size:
            self.flush()

    def flush(self) -> None:
        """Write and commit the buffered rows as one part (no-op when empty)."""
        if not self.rows:
            return
        name = f"part-{self.next_index:06d}"
        if self.sr:
            self._write_reports(name)
        if self.fhir:
            from medfusion.fhir.write import result_ndjson_text

            tmp_fhir = self.fhir_dir / f".{name}.ndjson.tmp"
            tmp_fhir.write_text(result_ndjson_text(self.rows), encoding="utf-8")
            _durable_replace(tmp_fhir, self.fhir_dir / f"{name}.ndjson")
        frame = pd.DataFrame([row.to_record() for row in self.rows])
        tmp = self.results_dir / f".{name}.parquet.tmp"
        frame.to_parquet(tmp, index=False)
        _durable_replace(tmp, self.results_dir / f"{name}.parquet")
        uids = [str(u) for u in frame["study_uid"]]
        self.ledger.commit_part(name, uids)
        self.written += len(self.rows)
        self.rows = []
        self.reports = []
        self.next_index += 1
        if self.committed is not None:
            self.committed(name, uids)

    def _write_reports(self, name: str) -> None:
        """The part's SRs into ``sr/<name>/``, all or none (see the module docstring)."""
        from medfusion.dicom_sr.write import write_sr

        tmp = self.sr_dir / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for row, report in zip(self.rows, self.reports, strict=True):
            path = tmp / f"{row.study_uid}.dcm"
            write_sr(report, path)
            with open(path, "rb+") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(tmp)
        os.replace(tmp, self.sr_dir / name)
        _fsync_dir(self.sr_dir)


def read_parts(results_dir: Path, committed: set[str] | None = None) -> pd.DataFrame:
    """Concatenate the part files (only ``committed`` part names when given)."""
    paths = sorted(p for p in results_dir.glob("part-*.parquet") if committed is None or p.stem in committed)
    if not paths:
        return pd.DataFrame({"study_uid": pd.Series(dtype=str)})
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
