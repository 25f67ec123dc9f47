"""The manifest: one row per study, the single table that training, evaluation and scoring read.

Columns:

* ``study_uid`` (str, unique): StudyInstanceUID.
* ``image_paths`` (list of str): DICOM files of the study; a Parquet list column, a JSON array string
  in CSV. May be empty (image modality missing).
* ``report_text`` (str): the report; ``""`` means no report (text modality missing).
* ``split``: ``train``, ``val`` or ``test`` (see :func:`assign_splits`).
* ``patient_pseudonym`` (str): pseudonymised patient id, the unit of splitting.
* ``accession_pseudonym`` (str or null).
* ``y_<label>`` per label (float): 1.0, 0.0, or NaN for unknown (an empty cell in CSV).
* ``lesion_mask_path`` (str or null, optional), and any extra columns, kept as they are.

:func:`read_manifest` validates all of this and raises :class:`~medfusion.errors.ManifestError` naming
the file and the reason; :func:`write_manifest` validates before writing, so what it writes reads back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from medfusion.errors import ManifestError
from medfusion.ingest.csv_table import first_line
from medfusion.ingest.records import LABEL_PREFIX

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = (
    "study_uid",
    "image_paths",
    "report_text",
    "split",
    "patient_pseudonym",
    "accession_pseudonym",
)
LESION_MASK_COLUMN = "lesion_mask_path"
SPLITS = ("train", "val", "test")
SUFFIXES = (".parquet", ".csv")
#: Cells read as missing in extra CSV columns (the known columns are parsed explicitly).
_CSV_NA = ["", "NA", "N/A", "NaN", "nan", "null", "None"]
_IN_MEMORY = "<dataframe>"


def manifest_labels(df: pd.DataFrame) -> list[str]:
    """Return the label names of a manifest (its ``y_`` columns, prefix removed), in column order."""
    return [str(c)[len(LABEL_PREFIX) :] for c in df.columns if str(c).startswith(LABEL_PREFIX)]


def _is_missing(value: Any) -> bool:
    """True for None and float NaN (pandas' missing markers), False for everything else."""
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def _where(df: pd.DataFrame, position: int) -> str:
    """Name a row in a message: by its study UID when it has a usable one, else its 1-based row number."""
    uid = df["study_uid"].iloc[position] if "study_uid" in df.columns else None
    return f"study {uid}" if isinstance(uid, str) and uid else f"row {position + 1}"


def _label_column(values: pd.Series, column: str, source: str, df: pd.DataFrame) -> pd.Series:
    """Convert a label column to float64, checking every value is 1, 0 or missing."""
    out = np.empty(len(values), dtype=np.float64)
    for i, value in enumerate(values.tolist()):
        if _is_missing(value):
            out[i] = np.nan
            continue
        if isinstance(value, (bool, np.bool_)):
            value = float(value)
        if not isinstance(value, (int, float, np.integer, np.floating)) or float(value) not in (0.0, 1.0):
            raise ManifestError(
                source, f"{column} of {_where(df, i)} is {value!r}; label values must be 1, 0 or empty (unknown)"
            )
        out[i] = float(value)
    return pd.Series(out, index=values.index, name=column)


def _path_list(value: Any) -> list[str] | None:
    """A list/tuple/array of strings as a list, else None."""
    if isinstance(value, (list, tuple, np.ndarray)) and all(isinstance(p, str) for p in value):
        return [str(p) for p in value]
    return None


def validate_manifest(
    df: pd.DataFrame, *, source: str | Path = _IN_MEMORY, labels: list[str] | None = None
) -> pd.DataFrame:
    """Check a manifest table and return a normalised copy.

    Normalised: index reset; ``image_paths`` lists of str; ``report_text`` str (missing -> ``""``);
    ``accession_pseudonym`` and ``lesion_mask_path`` str or None; label columns float64.

    Args:
        df: The table.
        source: Named in errors (the file it came from or goes to).
        labels: Labels that must have a ``y_<label>`` column; all ``y_`` columns are checked anyway.

    Returns:
        The normalised copy.

    Raises:
        ManifestError: A required or requested label column is missing, there are no rows, a
            study UID is empty or duplicated, a patient pseudonym is empty, a split value is not
            train/val/test, ``image_paths`` is not a list of paths, or a label is not 1/0/empty.
    """
    source = str(source)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(source, f"missing required column(s): {', '.join(missing)}")
    for label in labels or []:
        if f"{LABEL_PREFIX}{label}" not in df.columns:
            raise ManifestError(source, f"no label column {LABEL_PREFIX}{label} for requested label {label!r}")
    if len(df) == 0:
        raise ManifestError(source, "manifest has no studies")
    out = df.reset_index(drop=True).copy()

    for column in ("study_uid", "patient_pseudonym"):
        for i, value in enumerate(out[column].tolist()):
            if not isinstance(value, str) or not value.strip():
                raise ManifestError(source, f"row {i + 1}: empty or non-text {column}")
        out[column] = out[column].astype(str)
    counts = out["study_uid"].value_counts()
    duplicated = counts[counts > 1]
    if len(duplicated):
        shown = ", ".join(f"{uid} ({n} rows)" for uid, n in duplicated.head(3).items())
        more = f" and {len(duplicated) - 3} more" if len(duplicated) > 3 else ""
        raise ManifestError(source, f"duplicate study_uid: {shown}{more}")

    for i, value in enumerate(out["split"].tolist()):
        if _is_missing(value):
            raise ManifestError(source, f"missing split value for {_where(out, i)} (expected train, val or test)")
        if value not in SPLITS:
            raise ManifestError(source, f"bad split value {value!r} for {_where(out, i)} (expected train, val or test)")
    out["split"] = out["split"].astype(str)

    paths: list[list[str]] = []
    for i, value in enumerate(out["image_paths"].tolist()):
        as_list = _path_list(value)
        if as_list is None:
            raise ManifestError(source, f"image_paths of {_where(out, i)} is not a list of paths")
        paths.append(as_list)
    out["image_paths"] = pd.Series(paths, index=out.index, dtype=object)

    texts = []
    for i, value in enumerate(out["report_text"].tolist()):
        if not _is_missing(value) and not isinstance(value, str):
            raise ManifestError(source, f"report_text of {_where(out, i)} is not text")
        texts.append("" if _is_missing(value) else value)
    out["report_text"] = pd.Series(texts, index=out.index).astype(str)

    for column in ("accession_pseudonym", LESION_MASK_COLUMN):
        if column not in out.columns:
            continue
        values = []
        for i, value in enumerate(out[column].tolist()):
            if not _is_missing(value) and not isinstance(value, str):
                raise ManifestError(source, f"{column} of {_where(out, i)} is neither text nor empty")
            values.append(None if _is_missing(value) or value == "" else value)
        out[column] = pd.Series(values, index=out.index, dtype=object)

    for label in manifest_labels(out):
        column = f"{LABEL_PREFIX}{label}"
        out[column] = _label_column(out[column], column, source, out)
    return out


# ------------------------------------------------------------------------------------------- files


def _check_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ManifestError(path, f"unknown manifest extension {suffix or '(none)'!r} (expected .parquet or .csv)")
    return suffix


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write`` on a temporary file next to ``path``, then rename it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _arrow_table(df: pd.DataFrame) -> pa.Table:
    """The manifest as an Arrow table with explicit types for the known columns (all-null safe)."""
    schema = pa.Schema.from_pandas(df, preserve_index=False)
    fixed = {
        "image_paths": pa.list_(pa.string()),
        "study_uid": pa.string(),
        "report_text": pa.string(),
        "split": pa.string(),
        "patient_pseudonym": pa.string(),
        "accession_pseudonym": pa.string(),
        LESION_MASK_COLUMN: pa.string(),
        **{f"{LABEL_PREFIX}{label}": pa.float64() for label in manifest_labels(df)},
    }
    for name, kind in fixed.items():
        index = schema.get_field_index(name)
        if index >= 0:
            schema = schema.set(index, pa.field(name, kind))
    return pa.Table.from_pandas(df, schema=schema, preserve_index=False)


def write_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Validate a manifest and write it as Parquet or CSV (by extension), replacing the file atomically.

    Args:
        df: The manifest.
        path: ``.parquet`` or ``.csv`` file; folders are created.

    Returns:
        The path written.

    Raises:
        ManifestError: Unknown extension, or the table is not a valid manifest (see
            :func:`validate_manifest`); the message names ``path``.
    """
    path = Path(path)
    suffix = _check_suffix(path)
    clean = validate_manifest(df, source=path)
    if suffix == ".parquet":
        try:
            table = _arrow_table(clean)
        except pa.ArrowException as exc:
            raise ManifestError(path, f"cannot store as Parquet: {str(exc).splitlines()[0][:200]}") from None
        _write_atomic(path, lambda tmp: pq.write_table(table, tmp))
    else:
        flat = clean.copy()
        flat["image_paths"] = [json.dumps(p, ensure_ascii=False) for p in clean["image_paths"]]
        _write_atomic(path, lambda tmp: flat.to_csv(tmp, index=False, na_rep="", encoding="utf-8"))
    logger.info("wrote manifest %s: %d studies", path, len(clean))
    return path


def _csv_cell_to_label(value: str) -> Any:
    """A CSV label cell: empty -> NaN, a number -> float, anything else unchanged (validation flags it)."""
    if value.strip() == "":
        return np.nan
    try:
        return float(value)
    except ValueError:
        return value


def _csv_cell_to_paths(value: str) -> Any:
    """A CSV image_paths cell: a JSON array -> list, anything else unchanged (validation flags it)."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV manifest, parsing the known columns explicitly and inferring the extra ones."""
    header = [str(c) for c in pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns]
    labels = [c for c in header if c.startswith(LABEL_PREFIX)]
    known = {*REQUIRED_COLUMNS, LESION_MASK_COLUMN, *labels}
    df = pd.read_csv(
        path,
        dtype={c: str for c in header if c in known},
        keep_default_na=False,
        na_values={c: _CSV_NA for c in header if c not in known},
        encoding="utf-8-sig",
    )
    if "image_paths" in df.columns:
        df["image_paths"] = pd.Series([_csv_cell_to_paths(v) for v in df["image_paths"]], index=df.index, dtype=object)
    for column in labels:
        df[column] = pd.Series([_csv_cell_to_label(v) for v in df[column]], index=df.index, dtype=object)
    return df


def read_manifest(path: str | Path, labels: list[str] | None = None) -> pd.DataFrame:
    """Read and validate a manifest.

    Args:
        path: ``.parquet`` or ``.csv`` file.
        labels: Labels that must be present (as ``y_<label>`` columns).

    Returns:
        The normalised manifest (see :func:`validate_manifest`).

    Raises:
        ManifestError: The file is missing or unreadable, has an unknown extension, or is not a valid
            manifest; the message names the file and the reason.
    """
    path = Path(path)
    suffix = _check_suffix(path)
    if not path.is_file():
        raise ManifestError(path, "manifest file not found")
    try:
        df = pd.read_parquet(path) if suffix == ".parquet" else _read_csv(path)
    except UnicodeDecodeError:
        raise ManifestError(path, "CSV manifest is not UTF-8 encoded") from None
    except pd.errors.EmptyDataError:
        raise ManifestError(path, "empty CSV file") from None
    except (pa.ArrowException, pd.errors.ParserError, OSError, ValueError) as exc:
        raise ManifestError(path, f"cannot read {suffix[1:]} manifest: {first_line(exc)}") from None
    return validate_manifest(df, source=path, labels=labels)


# ------------------------------------------------------------------------------------------ splits


def _unit_interval(key: str, seed: int) -> float:
    """A uniform-looking number in [0, 1) fixed by ``key`` and ``seed`` alone."""
    digest = hashlib.sha256(f"medfusion-split\x00{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


#: How :func:`assign_splits` assigns patients: ``hash`` (stable per patient, sizes right on average) or
#: ``exact`` (seeded shuffle, sizes within one patient of the fractions; optionally label-stratified).
SplitMethod = Literal["hash", "exact"]


def assign_splits(
    df: pd.DataFrame,
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    group_column: str = "patient_pseudonym",
    method: SplitMethod = "hash",
    stratify: Sequence[str] = (),
) -> pd.DataFrame:
    """Assign train/val/test splits by patient, deterministically.

    ``hash``: each group key (patient) is hashed with the seed to a number ``u`` in [0, 1):
    ``u < test_fraction`` is test, ``u < test_fraction + val_fraction`` is val, the rest train. Adding
    rows never moves existing patients, but sizes follow the fractions only on average: a cohort of
    a few dozen patients can miss them badly, or get an empty split (a warning is logged).

    ``exact``: :func:`exact_group_splits`: each split gets its fraction of the patients within one
    patient (at least one for val and test when their fraction is positive), chosen by a seeded shuffle
    of the sorted keys, and with ``stratify`` balanced so each split gets its share of every label's
    positive patients. Adding patients may move others: use it when a cohort is complete.

    Either way all studies of a patient share a split.

    Args:
        df: The manifest (any columns; ``group_column`` required).
        seed: Changes the assignment.
        val_fraction: Fraction of groups in val.
        test_fraction: Fraction of groups in test.
        group_column: Column holding the group key.
        method: ``hash`` or ``exact``.
        stratify: ``exact`` only: 0/1/NaN columns (``y_<label>``) whose positive patients are spread
            in proportion; a patient is positive when any of its studies is.

    Returns:
        A copy of ``df`` with its ``split`` column set.

    Raises:
        ValueError: Fractions outside [0, 1) or summing to 1 or more, missing ``group_column`` or
            ``stratify`` column, an empty group key, ``stratify`` with ``hash``, an unknown method, or
            (``exact``) too few patients for three splits.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"need 0 <= val_fraction, test_fraction and a sum < 1, got {val_fraction}, {test_fraction}")
    if group_column not in df.columns:
        raise ValueError(f"no column {group_column!r} to split by")
    keys = df[group_column].tolist()
    if any(_is_missing(k) or str(k).strip() == "" for k in keys):
        raise ValueError(f"empty {group_column} value(s): every row needs a group key to be split")
    if method == "exact":
        missing = [c for c in stratify if c not in df.columns]
        if missing:
            raise ValueError(f"no column(s) {', '.join(missing)} to stratify by")
        positive = df[list(stratify)].apply(pd.to_numeric, errors="coerce").eq(1.0)
        by_group = positive.groupby([str(k) for k in keys], sort=True).any()
        splits = exact_group_splits(
            list(by_group.index), by_group.to_numpy(), seed=seed, val_fraction=val_fraction, test_fraction=test_fraction
        )
    elif method == "hash":
        if stratify:
            raise ValueError("stratified splits need method 'exact' (the hash split assigns each patient alone)")
        splits = {}
        for key in dict.fromkeys(str(k) for k in keys):
            u = _unit_interval(key, seed)
            splits[key] = "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"
    else:
        raise ValueError(f"unknown split method {method!r} (hash or exact)")
    out = df.copy()
    out["split"] = [splits[str(k)] for k in keys]
    counts = out["split"].value_counts()
    wanted = {"train": True, "val": val_fraction > 0, "test": test_fraction > 0}
    empty = [s for s in SPLITS if wanted[s] and counts.get(s, 0) == 0]
    if empty:
        logger.warning("split(s) %s got no studies (%d groups); consider other fractions or seed", empty, len(splits))
    return out


def _exact_sizes(n: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """Groups per split: ``fraction * n`` rounded by largest remainder (each within one group of its
    share, summing to ``n``); val and test get at least one group when their fraction is positive."""
    share = {"train": (1 - val_fraction - test_fraction) * n, "val": val_fraction * n, "test": test_fraction * n}
    sizes = {s: math.floor(share[s]) for s in SPLITS}
    by_remainder = sorted(SPLITS, key=lambda s: share[s] - sizes[s], reverse=True)
    for s in by_remainder[: n - sum(sizes.values())]:
        sizes[s] += 1
    for s, fraction in (("val", val_fraction), ("test", test_fraction)):
        if fraction > 0 and sizes[s] == 0 and n > 0:
            sizes[s], sizes["train"] = 1, sizes["train"] - 1
    return sizes


def exact_group_splits(
    keys: Sequence[str],
    positives: np.ndarray | None = None,
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
) -> dict[str, str]:
    """Split groups (patients) into train/val/test with exact sizes, seeded, optionally stratified.

    Sizes: ``fraction * n`` rounded by largest remainder, so each split is within one group of its
    share and they sum to ``n`` (val and test get at least one group when their fraction is positive).
    Groups are taken in the order of a seeded permutation of the sorted keys (the input order does not
    matter). With ``positives``, groups positive for a label go first, rarest label first, each to the
    split that still needs the most positives of that label (iterative stratification, Sechidis et al.
    2011) while it has room; the sizes stay exact.

    Args:
        keys: Distinct group keys.
        positives: ``(len(keys), L)`` bool, whether a group is positive for each label; None or ``L == 0``:
            no stratification.
        seed: Seed of the permutation.
        val_fraction: Fraction of groups in val.
        test_fraction: Fraction of groups in test.

    Returns:
        ``{key: split}``.

    Raises:
        ValueError: Too few groups to give train at least one group.
    """
    n = len(keys)
    capacity = _exact_sizes(n, val_fraction, test_fraction)
    if n and capacity["train"] < 1:
        raise ValueError(
            f"{n} patient(s) are too few for val {val_fraction} and test {test_fraction} with a train split"
        )
    order = sorted(range(n), key=lambda i: keys[i])
    order = [order[i] for i in np.random.default_rng(seed).permutation(n)]
    pos = np.zeros((n, 0), dtype=bool) if positives is None else np.asarray(positives, dtype=bool).reshape(n, -1)
    totals = pos.sum(axis=0)  # (L,)
    share = {s: capacity[s] / n if n else 0.0 for s in SPLITS}
    need = {s: totals * share[s] for s in SPLITS}  # (L,) positives each split should get

    def rarest(i: int) -> int:
        labels = np.flatnonzero(pos[i])
        return int(labels[np.argmin(totals[labels])]) if len(labels) else -1

    rare = [rarest(i) for i in order]
    # positive groups first, rarest label first; then the rest (stable: the permutation breaks ties)
    ranked = sorted(range(n), key=lambda j: (rare[j] < 0, totals[rare[j]] if rare[j] >= 0 else 0))
    out: dict[str, str] = {}
    for j in ranked:
        i, label = order[j], rare[j]
        room = [s for s in SPLITS if capacity[s] > 0]
        if label >= 0:
            split = max(room, key=lambda s: (need[s][label], capacity[s]))
        else:
            split = max(room, key=lambda s: capacity[s] / max(n * share[s], 1e-9))
        out[keys[i]] = split
        capacity[split] -= 1
        need[split] = need[split] - pos[i]
    return out


def split_sizes(df: pd.DataFrame, group_column: str = "patient_pseudonym") -> dict[str, dict[str, float]]:
    """Achieved split sizes: per split, ``patients``, ``studies`` and ``patient_fraction``."""
    groups = df.groupby("split")[group_column].nunique()
    studies = df["split"].value_counts()
    total = max(int(df[group_column].nunique()), 1)
    return {
        s: {
            "patients": int(groups.get(s, 0)),
            "studies": int(studies.get(s, 0)),
            "patient_fraction": round(int(groups.get(s, 0)) / total, 4),
        }
        for s in SPLITS
    }


def format_split_sizes(sizes: dict[str, dict[str, float]]) -> str:
    """One line: ``train 60 patients (60.0 %, 75 studies), val ..., test ...``."""
    return ", ".join(
        f"{s} {int(v['patients'])} patients ({100 * v['patient_fraction']:.1f} %, {int(v['studies'])} studies)"
        for s, v in sizes.items()
    )


# ----------------------------------------------------------------------------------- hash, records


def _canonical(value: Any) -> Any:
    """A JSON-ready, type-insensitive form of a cell: numbers as floats, missing as None, arrays as lists."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_canonical(v) for v in value]
    if _is_missing(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        number = float(value)
        return None if math.isnan(number) else number
    if isinstance(value, str):
        return value
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)


def manifest_hash(df: pd.DataFrame) -> str:
    """SHA-256 of a manifest's content, independent of row order, column order and file format.

    Rows are sorted by ``study_uid`` and columns by name; numbers compare as floats and every missing
    marker (None, NaN, NA) as null, so a manifest hashes the same after a CSV or Parquet round trip.

    Args:
        df: The manifest (needs ``study_uid``).

    Returns:
        64 hex characters.

    Raises:
        ValueError: ``df`` has no ``study_uid`` column.
    """
    if "study_uid" not in df.columns:
        raise ValueError("manifest_hash needs a study_uid column")
    columns = sorted(str(c) for c in df.columns)
    ordered = df.rename(columns=str).sort_values("study_uid", kind="stable")[columns]
    rows = [[_canonical(v) for v in row] for row in ordered.itertuples(index=False, name=None)]
    payload = json.dumps({"columns": columns, "rows": rows}, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def rows_to_records(df: pd.DataFrame, labels: list[str]) -> list[dict[str, Any]]:
    """Turn manifest rows into MONAI-style dict records.

    Args:
        df: A manifest as returned by :func:`read_manifest`.
        labels: Label names, in model output order.

    Returns:
        One dict per row: ``{"image": [paths], "report": str, "label": float32 array (L,) with NaN
        for unknown, "meta": {"study_uid", "patient_pseudonym", "split"[, "lesion_mask_path"]}}``
        (the pseudonym groups a patient's studies, e.g. for the bootstrap). ``lesion_mask_path`` is
        present when the manifest has the column, ``""`` when the study has no mask (so batches
        collate).

    Raises:
        ManifestError: A label has no ``y_<label>`` column.
    """
    missing = [label for label in labels if f"{LABEL_PREFIX}{label}" not in df.columns]
    if missing:
        raise ManifestError(_IN_MEMORY, f"no label column(s) for {missing}")
    label_values = df[[f"{LABEL_PREFIX}{label}" for label in labels]].to_numpy(dtype=np.float32, na_value=np.nan)
    has_mask = LESION_MASK_COLUMN in df.columns
    records = []
    for i, row in enumerate(df.to_dict(orient="records")):
        meta: dict[str, Any] = {
            "study_uid": row["study_uid"],
            "patient_pseudonym": str(row["patient_pseudonym"]),
            "split": row["split"],
        }
        if has_mask:
            mask = row[LESION_MASK_COLUMN]
            meta[LESION_MASK_COLUMN] = "" if _is_missing(mask) else str(mask)
        text = row["report_text"]
        records.append(
            {
                "image": list(row["image_paths"]),
                "report": "" if _is_missing(text) else str(text),
                "label": label_values[i].copy(),  # (L,) float32
                "meta": meta,
            }
        )
    return records
