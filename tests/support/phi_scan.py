"""Search files for protected health information: reusable by any test that checks outputs.

:func:`cohort_needles` reads the identifiers of a cohort from its DICOM headers (with pydicom, the
way an auditor would); :func:`find_phi` searches files for them, case-insensitively, looking inside
the containers our outputs use: sqlite databases (every table dumped), Parquet (every cell), zip
files (every member), gzip, safetensors (the JSON header; the tensor bytes are numbers); anything
else is searched as raw bytes.

Example::

    needles = cohort_needles(cohort / "dicom")
    hits = find_phi(output_files(project_dir, exclude=[cohort / "dicom"]), needles)
    assert not hits, format_hits(hits)
"""

from __future__ import annotations

import gzip
import io
import sqlite3
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pydicom


@dataclass(frozen=True)
class Needle:
    """One identifier to look for.

    Attributes:
        kind: ``patient_name``, ``patient_surname``, ``patient_id``, ``birth_date``, ``accession``.
        value: The identifier as it would be written.
    """

    kind: str
    value: str


@dataclass(frozen=True)
class Hit:
    """One identifier found in one file.

    Attributes:
        path: The file (``file::member`` or ``file::table`` for containers).
        needle: What was found.
        context: Up to 40 characters either side.
    """

    path: str
    needle: Needle
    context: str


def cohort_needles(dicom_root: Path, *, min_surname: int = 5, placeholder_names: Iterable[str] = ()) -> list[Needle]:
    """Patient names (DICOM and display forms, and surnames of ``min_surname``+ letters), patient
    IDs, birth dates (``YYYYMMDD`` and ``YYYY-MM-DD``) and accession numbers of every readable
    DICOM file under ``dicom_root``.

    ``placeholder_names`` (e.g. the demo's ``BROKEN^FILE``) are searched as whole names only: their
    "surnames" are ordinary words.
    """
    placeholders = set(placeholder_names)
    found: set[Needle] = set()
    for path in sorted(p for p in dicom_root.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(
                path, stop_before_pixels=True, force=True,
                specific_tags=["PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "OtherPatientIDs"],
            )  # fmt: skip
        except Exception:  # noqa: BLE001 - unreadable files hold no needles we can know
            continue
        name = str(ds.get("PatientName", "") or "").strip()
        if name:
            found.add(Needle("patient_name", name))
            parts = [p for p in name.split("^") if p]
            if len(parts) >= 2:
                found.add(Needle("patient_name", f"{parts[1]} {parts[0]}"))
                found.add(Needle("patient_name", f"{parts[0]}, {parts[1]}"))
            if parts and len(parts[0]) >= min_surname and name not in placeholders:
                found.add(Needle("patient_surname", parts[0]))
        for keyword, kind in (
            ("PatientID", "patient_id"),
            ("AccessionNumber", "accession"),
            ("OtherPatientIDs", "patient_id"),
        ):
            value = ds.get(keyword)
            for v in value if isinstance(value, (list, pydicom.multival.MultiValue)) else [value]:
                if v is not None and str(v).strip():
                    found.add(Needle(kind, str(v).strip()))
        birth = str(ds.get("PatientBirthDate", "") or "").strip()
        if len(birth) == 8 and birth.isdigit():
            found.add(Needle("birth_date", birth))
            found.add(Needle("birth_date", f"{birth[:4]}-{birth[4:6]}-{birth[6:]}"))
    return sorted(found, key=lambda n: (n.kind, n.value))


def output_files(root: Path, *, exclude: Iterable[Path] = ()) -> list[Path]:
    """Every file under ``root`` except those under the ``exclude`` folders (or equal to them)."""
    skipped = [Path(e).resolve() for e in exclude]
    files = []
    for path in sorted(root.rglob("*")):
        resolved = path.resolve()
        if path.is_file() and not any(resolved == s or s in resolved.parents for s in skipped):
            files.append(path)
    return files


def _sqlite_text(path: Path) -> list[tuple[str, bytes]]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        con.text_factory = lambda b: b.decode("utf-8", "replace")
        return [(f"{path}::sql", "\n".join(con.iterdump()).encode("utf-8"))]
    finally:
        con.close()


def _parquet_text(path: Path) -> list[tuple[str, bytes]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    text = "\n".join([str(table.schema), *(str(row) for row in table.to_pylist())])
    return [(f"{path}::rows", text.encode("utf-8"))]


#: The medfusion package's own source folder: a logged model ships it as a wheel (its code, not an output).
_PACKAGE = Path(__file__).resolve().parents[2] / "medfusion"


def _is_own_source(name: str, member: bytes) -> bool:
    """A zip member that is byte for byte one of medfusion's own source files (the model's shipped wheel):
    code such as the demo generator's invented name list, not something a run wrote."""
    if not name.startswith("medfusion/"):
        return False
    source = _PACKAGE / name.removeprefix("medfusion/")
    return source.is_file() and source.read_bytes() == member


def _zip_members(path: Path, data: bytes) -> list[tuple[str, bytes]]:
    out = []
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            if not info.is_dir():
                member = zf.read(info)
                if not _is_own_source(info.filename, member):
                    out.append((f"{path}::{info.filename}", member))
    return out


def _blobs(path: Path) -> list[tuple[str, bytes]]:
    """``(locator, bytes)`` to search in one file: the raw bytes, plus decoded container contents."""
    if path.suffix == ".safetensors":  # tensor bytes are numbers, not text: search the JSON header
        with path.open("rb") as f:
            size = int.from_bytes(f.read(8), "little")
            return [(f"{path}::header", f.read(min(size, 100 * 2**20)))]
    data = path.read_bytes()
    blobs = [(str(path), data)]
    try:
        if data.startswith(b"SQLite format 3\x00"):
            blobs += _sqlite_text(path)
        elif data.startswith(b"PAR1"):
            blobs += _parquet_text(path)
        elif data.startswith(b"PK\x03\x04"):
            blobs += _zip_members(path, data)
        elif data.startswith(b"\x1f\x8b"):
            blobs.append((f"{path}::gunzip", gzip.decompress(data)))
    except Exception as exc:
        raise AssertionError(f"{path}: cannot open for the PHI scan: {exc}") from exc
    return blobs


def find_phi(paths: Iterable[Path], needles: Iterable[Needle]) -> list[Hit]:
    """Every occurrence (first per file and needle) of any needle in any of ``paths``, case-insensitive.

    Args:
        paths: Files to search (see :func:`output_files`).
        needles: What to look for (see :func:`cohort_needles`).

    Returns:
        The hits; empty when nothing was found.
    """
    wanted = [(n, n.value.lower().encode("utf-8")) for n in needles if n.value]
    hits = []
    for path in paths:
        for where, blob in _blobs(Path(path)):
            lowered = blob.lower()
            for needle, pattern in wanted:
                at = lowered.find(pattern)
                if at >= 0:
                    context = blob[max(0, at - 40) : at + len(pattern) + 40].decode("utf-8", "replace")
                    hits.append(Hit(where, needle, context))
    return hits


def format_hits(hits: list[Hit], limit: int = 20) -> str:
    """Hits as lines ``file: kind 'value' in '...context...'``."""
    lines = [f"{h.path}: {h.needle.kind} {h.needle.value!r} in {h.context!r}" for h in hits[:limit]]
    if len(hits) > limit:
        lines.append(f"... and {len(hits) - limit} more")
    return "\n".join(lines)
