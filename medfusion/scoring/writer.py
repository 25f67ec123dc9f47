"""The part writer: result rows (:class:`~medfusion.results.ResultRow`) -> Parquet (and FHIR NDJSON) parts.

A part is made durable before the ledger hears of it: the file is written under a temporary name
(``.part-N...``), fsynced, renamed to ``part-N.parquet`` and the folder fsynced; only then does
:meth:`~medfusion.scoring.ledger.Ledger.commit_part` mark its studies done. With ``fhir`` the
matching ``fhir/part-N.ndjson`` (:func:`medfusion.fhir.write.result_ndjson_text`) is written the same way,
before the Parquet part.

Imports: pandas, :mod:`medfusion.results`, :mod:`medfusion.fhir.write`, :mod:`medfusion.scoring.ledger`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from medfusion.results import ResultRow
from medfusion.scoring.ledger import Ledger

RESULTS_DIR = "results"
FHIR_DIR = "fhir"
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
    """

    def __init__(self, out_dir: Path, ledger: Ledger, *, part_size: int = 256, fhir: bool = False) -> None:
        self.results_dir = out_dir / RESULTS_DIR
        self.fhir_dir = out_dir / FHIR_DIR
        self.results_dir.mkdir(parents=True, exist_ok=True)
        if fhir:
            self.fhir_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = ledger
        self.part_size = max(1, part_size)
        self.fhir = fhir
        self.rows: list[ResultRow] = []
        self.written = 0
        existing = [int(m[1]) for p in self.results_dir.iterdir() if (m := _PART.match(p.name))]
        self.next_index = max(existing, default=-1) + 1

    def add(self, row: ResultRow) -> None:
        """Buffer one scored study's row; commit a part when the buffer is full."""
        self.rows.append(row)
        if len(self.rows) >= self.part_size:
            self.flush()

    def flush(self) -> None:
        """Write and commit the buffered rows as one part (no-op when empty)."""
        if not self.rows:
            return
        name = f"part-{self.next_index:06d}"
        if self.fhir:
            from medfusion.fhir.write import result_ndjson_text

            tmp_fhir = self.fhir_dir / f".{name}.ndjson.tmp"
            tmp_fhir.write_text(result_ndjson_text(self.rows), encoding="utf-8")
            _durable_replace(tmp_fhir, self.fhir_dir / f"{name}.ndjson")
        frame = pd.DataFrame([row.to_record() for row in self.rows])
        tmp = self.results_dir / f".{name}.parquet.tmp"
        frame.to_parquet(tmp, index=False)
        _durable_replace(tmp, self.results_dir / f"{name}.parquet")
        self.ledger.commit_part(name, [str(u) for u in frame["study_uid"]])
        self.written += len(self.rows)
        self.rows = []
        self.next_index += 1


def read_parts(results_dir: Path, committed: set[str] | None = None) -> pd.DataFrame:
    """Concatenate the part files (only ``committed`` part names when given)."""
    paths = sorted(p for p in results_dir.glob("part-*.parquet") if committed is None or p.stem in committed)
    if not paths:
        return pd.DataFrame({"study_uid": pd.Series(dtype=str)})
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
