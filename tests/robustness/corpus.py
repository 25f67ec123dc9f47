"""pydicom's shipped test corpus: the one list of its files, read once by the robustness suite
(:func:`tests.robustness.test_bad_inputs.test_pydicom_corpus_bounded`)."""

from __future__ import annotations

from pathlib import Path

import pydicom.data


def corpus_files() -> list[Path]:
    """pydicom's test, charset and palette files that ship with the installed wheel (and pydicom-data's
    files when that package is installed: ``get_testdata_files`` lists them too), files only, sorted."""
    found: set[str] = set(pydicom.data.get_testdata_files())
    for getter in ("get_charset_files", "get_palette_files"):
        if hasattr(pydicom.data, getter):
            found.update(getattr(pydicom.data, getter)())
    return sorted(Path(p) for p in found if Path(p).is_file())
