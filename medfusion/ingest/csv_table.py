"""Strict reading of the small CSV files users hand us (labels, reports): all cells as text."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medfusion.errors import InputRejected


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (or its type name), at most ``limit`` characters."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def read_text_csv(path: Path, error: type[InputRejected], what: str, *, header_only: bool = False) -> pd.DataFrame:
    """Read a UTF-8 CSV file with every cell as a string (empty cells stay ``""``).

    Args:
        path: The CSV file.
        error: The typed error to raise (e.g. ``ReportParseError``).
        what: How messages name the file, e.g. ``"label file"``.
        header_only: Read the header line only (a cheap column check before any work).

    Returns:
        The table: one row per data line (none when ``header_only``), columns from the header.

    Raises:
        InputRejected: ``error(path, reason)`` when the file is missing, unreadable, not UTF-8, empty or not CSV.
    """
    if not path.is_file():
        raise error(path, f"{what} not found")
    try:
        return pd.read_csv(
            path, dtype=str, keep_default_na=False, encoding="utf-8-sig", nrows=0 if header_only else None
        )
    except UnicodeDecodeError:
        raise error(path, f"{what} is not UTF-8 encoded") from None
    except OSError as exc:
        raise error(path, f"cannot read {what}: {exc.strerror or type(exc).__name__}") from None
    except pd.errors.EmptyDataError:
        raise error(path, "empty CSV file") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise error(path, f"{what} is not a readable CSV: {first_line(exc)}") from None
