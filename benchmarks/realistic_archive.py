"""A realistic benchmark archive: real full-size radiographs in the transfer syntaxes archives hold.

Sources: the real computed radiographs of ``pydicom-data`` (the ``real-data`` extra): ``RG1_UNCR``
(chest CR, 1955x1841, 15 bits, MONOCHROME1) and ``RG3_UNCR`` (CR, 1760x1760, 10 bits). Each is encoded
once per transfer syntax, then copied with fresh Study/Series/SOP Instance UIDs, one study per file,
round-robin over syntaxes and sources, with a plain-text report per study (``reports/<StudyInstanceUID>.txt``):

=============  ===========================  =================================================
code           transfer syntax              encoder
=============  ===========================  =================================================
``j2kr``       JPEG 2000 lossless (.90)     pydicom + pylibjpeg-openjpeg
``j2ki``       JPEG 2000 lossy (.91), 10:1  pydicom + pylibjpeg-openjpeg
``jls``        JPEG-LS lossless (.80)       pydicom + pyjpegls
``sv1``        JPEG lossless SV1 (.70)      dcmtk's ``dcmcjpeg +e1`` (skipped when not on PATH)
``rle``        RLE lossless (.5)            pydicom (pylibjpeg-rle when installed)
``unc``        explicit VR little endian    (none)
=============  ===========================  =================================================

Layout::

    <out>/dicom/<code>/<n>.dcm    <out>/reports/<StudyInstanceUID>.txt    <out>/archive.json

Usage (500 studies by default; ``--syntax`` restricts the mix, e.g. one archive per syntax)::

    python benchmarks/realistic_archive.py --out /tmp/archive --studies 500 [--syntax j2kr --syntax unc]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

SOURCES = ("RG1_UNCR", "RG3_UNCR")
SYNTAXES = {
    "j2kr": JPEG2000Lossless,
    "j2ki": JPEG2000,
    "jls": JPEGLSLossless,
    "sv1": JPEGLosslessSV1,
    "rle": RLELossless,
    "unc": ExplicitVRLittleEndian,
}
REPORTS = (
    "FINDINGS: The heart size is normal. The lungs are clear. No pleural effusion.\nIMPRESSION: No acute disease.",
    "FINDINGS: Patchy opacity in the right lower lobe. Small right pleural effusion.\n"
    "IMPRESSION: Right lower lobe pneumonia.",
    "FINDINGS: Cardiomegaly. Interstitial markings are increased.\nIMPRESSION: Findings suggest mild edema.",
)


def source_files() -> dict[str, Path]:
    """The pydicom-data originals.

    Raises:
        SystemExit: pydicom-data is not installed.
    """
    from medfusion.datasets.assets import _package_dir

    package = _package_dir("data_store")
    files = {name: package / "data" / f"{name}.dcm" for name in SOURCES} if package else {}
    if not files or not all(p.is_file() for p in files.values()):
        raise SystemExit("pydicom-data is not installed: pip install pydicom-data==1.0.0 (the real-data extra)")
    return files


def encode(source: Path, code: str, into: Path) -> Path | None:
    """``source`` re-encoded in ``code``'s syntax into ``into``; None when no encoder is available."""
    out = into / f"{source.stem}-{code}.dcm"
    syntax = SYNTAXES[code]
    if code == "sv1":
        tool = shutil.which("dcmcjpeg")
        if tool is None:
            return None
        subprocess.run([tool, "+e1", str(source), str(out)], check=True, capture_output=True)
        return out
    ds = pydicom.dcmread(source)
    if code == "j2ki":
        ds.compress(syntax, j2k_cr=[10])
    elif syntax != ExplicitVRLittleEndian:
        ds.compress(syntax)
    ds.save_as(out, enforce_file_format=True)
    return out


def fresh_copy(template: Dataset, path: Path, index: int) -> str:
    """Write ``template`` to ``path`` with fresh study/series/instance UIDs; returns the study UID."""
    ds = template.copy()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.AccessionNumber = f"BENCH{index:07d}"
    ds.InstanceNumber = 1
    ds.save_as(path, enforce_file_format=True)
    return str(ds.StudyInstanceUID)


def build(out: Path, studies: int, codes: Sequence[str]) -> dict[str, object]:
    """Write the archive (see the module docstring); returns what was written (also ``archive.json``)."""
    files = source_files()
    (out / "dicom").mkdir(parents=True, exist_ok=True)
    (out / "reports").mkdir(parents=True, exist_ok=True)
    templates: list[tuple[str, str, Dataset]] = []
    skipped: list[str] = []
    with tempfile.TemporaryDirectory(prefix="archive-encode-") as tmp:
        for code in codes:
            for name, path in files.items():
                encoded = encode(path, code, Path(tmp))
                if encoded is None:
                    skipped.append(code)
                    break
                templates.append((code, name, pydicom.dcmread(encoded)))
    counts: dict[str, int] = {}
    for i in range(studies):
        code, _, template = templates[i % len(templates)]
        folder = out / "dicom" / code
        folder.mkdir(exist_ok=True)
        study_uid = fresh_copy(template, folder / f"{i:06d}.dcm", i)
        (out / "reports" / f"{study_uid}.txt").write_text(REPORTS[i % len(REPORTS)] + "\n", encoding="utf-8")
        counts[code] = counts.get(code, 0) + 1
    record: dict[str, object] = {
        "studies": studies,
        "sources": list(files),
        "per_syntax": counts,
        "transfer_syntaxes": {c: str(SYNTAXES[c]) for c in counts},
        "skipped": sorted(set(skipped)),
    }
    (out / "archive.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="Archive folder (dicom/, reports/, archive.json).")
    parser.add_argument("--studies", type=int, default=500)
    parser.add_argument("--syntax", action="append", choices=sorted(SYNTAXES), help="Repeatable; default: all.")
    args = parser.parse_args()
    record = build(args.out, args.studies, args.syntax or list(SYNTAXES))
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
