"""Seeded generators of malformed inputs: DICOM variants of real files, FHIR JSON, reports, configs.

Each generator writes its files under ``out`` and returns ``[(case name, path)]``; the same seed
gives the same bytes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pydicom.uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info
from pydicom.filewriter import dcmwrite, write_dataset, write_file_meta_info

#: Offsets (bytes) at which copies are cut; negative offsets count from the end.
TRUNCATE_AT = (0, 1, 100, 128, 132, 200, 400, 0.5, -100, -1)
#: (number of flipped bytes, where): where is "meta" (first 600 bytes) or "any".
BIT_FLIPS = ((1, "meta"), (8, "meta"), (32, "any"), (256, "any"))
#: Transfer syntaxes that do not match how the dataset is actually encoded.
WRONG_SYNTAXES = {
    "implicit_le": "1.2.840.10008.1.2",
    "explicit_be": "1.2.840.10008.1.2.2",
    "deflated": "1.2.840.10008.1.2.1.99",
    "jpeg_baseline": "1.2.840.10008.1.2.4.50",
    "jpeg2000": "1.2.840.10008.1.2.4.91",
    "rle": "1.2.840.10008.1.2.5",
    "unknown_uid": "1.2.3.4.5.6.7",
    "not_a_uid": "hello world",
}
#: (Rows, Columns, NumberOfFrames) far beyond the default max_pixels (64 M), kept in the header only.
HUGE_DIMENSIONS = {
    "rows_cols_65535": (65535, 65535, None),
    "frames_1e9": (512, 512, "999999999"),
    "cols_65535_frames_5000": (1, 65535, "5000"),
}


def _write_like(ds: pydicom.Dataset, path: Path) -> Path:
    """Write ``ds`` in its own transfer syntax (compressed pixel data stays encapsulated)."""
    dcmwrite(path, ds)
    return path


def _without_pixels(src: Path, value: bytes | None) -> pydicom.Dataset:
    ds = pydicom.dcmread(src)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    if value is None:
        del ds.PixelData
    else:
        ds.PixelData = value
    return ds


def _with_transfer_syntax(src: Path, uid: str, path: Path) -> Path:
    """``src`` byte for byte, except its file meta now declares ``uid`` (the dataset is not re-encoded)."""
    with src.open("rb") as fp:
        preamble = fp.read(132)
        meta = _read_file_meta_info(fp)
        dataset = fp.read()
    meta.TransferSyntaxUID = uid
    buf = DicomBytesIO()
    write_file_meta_info(buf, meta, enforce_standard=True)
    path.write_bytes(preamble + buf.getvalue() + dataset)
    return path


def dicom_variants(seeds: list[Path], out: Path, *, seed: int = 7) -> list[tuple[str, Path]]:
    """Truncated, bit-flipped, wrong-syntax, pixel-less and huge-dimension copies of ``seeds``.

    Args:
        seeds: Valid DICOM files (native explicit VR little endian, as the demo cohort writes).
        out: Folder for the variants.
        seed: RNG seed of the bit flips.

    Returns:
        ``[(case, path)]``, case ``<family>/<seed index>/<variant>``.
    """
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    cases: list[tuple[str, Path]] = []
    for i, src in enumerate(seeds):
        raw = src.read_bytes()
        for cut in TRUNCATE_AT:
            n = int(len(raw) * cut) if isinstance(cut, float) else (cut if cut >= 0 else len(raw) + cut)
            path = out / f"s{i}_trunc_{n}.dcm"
            path.write_bytes(raw[:n])
            cases.append((f"truncated/{i}/{n}", path))
        for n_flips, where in BIT_FLIPS:
            data = bytearray(raw)
            span = min(600, len(data)) if where == "meta" else len(data)
            for pos in rng.integers(0, span, size=n_flips):
                data[pos] ^= 1 << int(rng.integers(0, 8))
            path = out / f"s{i}_flip_{n_flips}_{where}.dcm"
            path.write_bytes(bytes(data))
            cases.append((f"bitflip/{i}/{n_flips}_{where}", path))
        for name, uid in WRONG_SYNTAXES.items():
            cases.append((f"wrong_syntax/{i}/{name}", _with_transfer_syntax(src, uid, out / f"s{i}_ts_{name}.dcm")))
        cases.append((f"no_pixels/{i}/deleted", _write_like(_without_pixels(src, None), out / f"s{i}_nopixels.dcm")))
        cases.append((f"no_pixels/{i}/empty", _write_like(_without_pixels(src, b""), out / f"s{i}_emptypixels.dcm")))
        for name, (rows, cols, frames) in HUGE_DIMENSIONS.items():
            ds = pydicom.dcmread(src)
            ds.Rows, ds.Columns = rows, cols
            if frames is not None:
                ds.NumberOfFrames = frames
            cases.append((f"huge/{i}/{name}", _write_like(ds, out / f"s{i}_huge_{name}.dcm")))
    return cases


# ------------------------------------------------------------------------------------ deflated DICOM

#: Inflated bytes of one repeated zero segment in generated deflate streams.
ZERO_SEGMENT = 2**24
#: The issue's file: a 16000 x 16000 all-zero 8-bit image, about 250 KB deflated.
HUGE_SIDE = 16000
#: Zero bytes of a private element placed before Rows: beyond the default inflate bound (576 MB).
BOMB_BYTES = 600 * 2**20


@functools.cache
def _zero_segment() -> bytes:
    """Raw deflate of :data:`ZERO_SEGMENT` zeros, byte-aligned and self-contained (repeatable)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return comp.compress(bytes(ZERO_SEGMENT)) + comp.flush(zlib.Z_SYNC_FLUSH)


def deflate_stream(parts: list[bytes | int]) -> bytes:
    """One complete raw deflate stream of ``parts``: bytes as given, an int as that many zeros.

    Zero runs are written as repeated self-contained segments, so a 256 MB run costs one 16 MB
    compression (a stream a real writer would produce, just faster).
    """
    out: list[bytes] = []
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    for part in parts:
        if isinstance(part, bytes):
            out.append(comp.compress(part))
            continue
        out.append(comp.flush(zlib.Z_FULL_FLUSH))  # byte-aligned, nothing referenced across
        n, rest = divmod(part, ZERO_SEGMENT)
        out.append(_zero_segment() * n)
        comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        out.append(comp.compress(bytes(rest)))
    out.append(comp.flush())
    return b"".join(out)


def image_dataset(
    rows: int, cols: int, *, bits: int = 8, study_uid: str | None = None, sop_uid: str | None = None
) -> Dataset:
    """A secondary-capture grayscale image header (no pixel data), UIDs generated when not given."""
    ds = Dataset()
    ds.SOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid or pydicom.uid.generate_uid()
    ds.StudyInstanceUID = study_uid or pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.Modality = "OT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    return ds


def _explicit_le(ds: Dataset) -> bytes:
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, ds)
    return buf.getvalue()


def _pixel_header(ds: Dataset, length: int) -> bytes:
    vr = b"OW" if ds.BitsAllocated > 8 else b"OB"
    return struct.pack("<HH2sHI", 0x7FE0, 0x0010, vr, 0, length)


def write_deflated(path: Path, ds: Dataset, stream: bytes) -> Path:
    """A Part-10 file of ``ds``'s SOP class declaring Deflated Explicit VR LE, with ``stream`` as its dataset."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    buf = DicomBytesIO()
    write_file_meta_info(buf, meta, enforce_standard=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(128) + b"DICM" + buf.getvalue() + stream)
    return path


def deflated_image_stream(ds: Dataset, pixels: bytes | int) -> bytes:
    """The deflated dataset of ``ds`` plus its pixel data (bytes, or an int: that many zeros)."""
    n = pixels if isinstance(pixels, int) else len(pixels)
    return deflate_stream([_explicit_le(ds) + _pixel_header(ds, n), pixels])


def deflate_variants(out: Path, *, seed: int = 13) -> list[tuple[str, Path]]:
    """Deflated Explicit VR Little Endian files ending their deflate stream in every way.

    Families (case ``deflate/<shape>/<image>``): ``complete`` (exact, one pad byte as pydicom
    writes odd lengths, 1000 trailing bytes; a 64x64 image and the 16000x16000 all-zero one),
    ``pydicom`` (written by pydicom's own deflate writer), ``truncated`` (inside the pixel data,
    inside the header, the last byte), ``empty`` (nothing after the file meta, an empty stream, a
    stream of empty blocks that never ends), ``not_zlib`` (random bytes, the native dataset, a
    gzip member) and ``bomb`` (a 600 MB private element before Rows, past the default bound).
    """
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    cases: list[tuple[str, Path]] = []
    small = image_dataset(64, 64, bits=16)
    small_pixels = rng.integers(0, 4096, (64, 64), dtype=np.uint16).tobytes()
    huge = image_dataset(HUGE_SIDE, HUGE_SIDE)
    streams = {
        "small": deflated_image_stream(small, small_pixels),
        "huge_zero": deflated_image_stream(huge, HUGE_SIDE**2),
    }
    for image, stream in streams.items():
        ds = small if image == "small" else huge
        for shape, tail in {"exact": b"", "padded": b"\x00", "trailing": rng.bytes(1000)}.items():
            path = write_deflated(out / f"{image}_{shape}.dcm", ds, stream + tail)
            cases.append((f"deflate/complete_{shape}/{image}", path))
    native = pydicom.Dataset(small)
    native.file_meta = FileMetaDataset()
    native.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    native.PixelData = small_pixels
    native.save_as(out / "pydicom_small.dcm", enforce_file_format=True)
    cases.append(("deflate/pydicom/small", out / "pydicom_small.dcm"))

    stream = streams["small"]
    cuts = {"in_pixels": len(stream) // 2, "in_header": 40, "last_byte": len(stream) - 1}
    for shape, n in cuts.items():
        cases.append((f"deflate/truncated_{shape}/small", write_deflated(out / f"cut_{shape}.dcm", small, stream[:n])))
    endless = b"\x00\x00\x00\xff\xff" * 200_000  # non-final empty stored blocks: input, no output, no end
    for shape, data in {"no_dataset": b"", "empty_stream": deflate_stream([]), "empty_blocks": endless}.items():
        cases.append((f"deflate/empty_{shape}/small", write_deflated(out / f"empty_{shape}.dcm", small, data)))
    gzip = zlib.compressobj(9, zlib.DEFLATED, 31)
    junk = {
        "random": rng.bytes(4096),
        "native": _explicit_le(small) + _pixel_header(small, len(small_pixels)) + small_pixels,
        "gzip": gzip.compress(_explicit_le(small)) + gzip.flush(),
    }
    for shape, data in junk.items():
        cases.append((f"deflate/not_zlib_{shape}/small", write_deflated(out / f"junk_{shape}.dcm", small, data)))

    bomb = image_dataset(16, 16)
    before = Dataset()
    before.add_new(0x00090010, "LO", "MEDFUSION FUZZ")
    head = _explicit_le(bomb[:0x00090000]) + _explicit_le(before)
    private = struct.pack("<HH2sHI", 0x0009, 0x1000, b"OB", 0, BOMB_BYTES)
    rest = _explicit_le(bomb[0x00090011:]) + _pixel_header(bomb, 256)
    data = deflate_stream([head + private, BOMB_BYTES, rest, bytes(256)])
    cases.append(("deflate/bomb_private_600mb/small", write_deflated(out / "bomb.dcm", bomb, data)))
    return cases


def slow_header_dicom(path: Path, n_elements: int, *, after_pixels: bool = False, study_uid: str | None = None) -> Path:
    """A valid-looking 16x16 image whose dataset repeats an empty private element ``n_elements`` times.

    8 bytes each: 2 million make a 16 MB file that pydicom needs seconds to parse (how many seconds depends on
    the machine: see :func:`slow_dicom_beyond`); the byte bounds let it through, only a wall-time bound stops
    it. Before the pixel data (default) they slow
    every header read; after it (``after_pixels``) only a full read (decoding) is slow.
    """
    ds = image_dataset(16, 16, study_uid=study_uid)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    buf = DicomBytesIO()
    write_file_meta_info(buf, meta, enforce_standard=True)
    pixels = _pixel_header(ds, 256) + bytes(256)
    if after_pixels:
        body = _explicit_le(ds) + pixels + struct.pack("<HH2sH", 0x7FE1, 0x1000, b"SH", 0) * n_elements
    else:
        empty = struct.pack("<HH2sH", 0x0009, 0x1000, b"SH", 0)
        body = _explicit_le(ds[:0x00090000]) + empty * n_elements + _explicit_le(ds[0x00090011:]) + pixels
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(128) + b"DICM" + buf.getvalue() + body)
    return path


def slow_dicom_beyond(
    path: Path, bound_s: float, read: Callable[[Path], object], *, factor: float = 4.0, after_pixels: bool = False
) -> Path:
    """A :func:`slow_header_dicom` file whose ``read`` takes at least ``factor * bound_s`` on this machine.

    How slow a fixed number of elements is depends on the machine (2 million took 5.5 s on one and under
    5 s on another), so a test of a time bound calibrates: it times ``read`` of 200,000 elements (read
    time is linear in their number) and scales the count, never below 2 million.

    Args:
        path: Where to write the file.
        bound_s: The time bound the file must exceed, seconds.
        read: The read whose duration matters (a header read, a full decode); it may raise.
        factor: How many times the bound the read should take.
        after_pixels: As in :func:`slow_header_dicom`.
    """
    probe_n = 200_000
    probe = slow_header_dicom(path.with_name(f"{path.stem}.probe.dcm"), probe_n, after_pixels=after_pixels)
    start = time.perf_counter()
    with contextlib.suppress(Exception):  # only the time spent matters
        read(probe)
    per_element = (time.perf_counter() - start) / probe_n
    probe.unlink()
    n_elements = max(2_000_000, math.ceil(factor * bound_s / per_element))
    return slow_header_dicom(path, n_elements, after_pixels=after_pixels)


# ------------------------------------------------------------------------------ copies of one instance

#: Broken copies of an instance, as re-sends and partial transfers leave them.
BROKEN_COPIES = ("truncated", "no_pixels", "garbage_rle")


def _broken_copy(src: Path, kind: str, path: Path) -> Path:
    raw = src.read_bytes()
    if kind == "truncated":  # the transfer stopped inside the pixel data
        path.write_bytes(raw[: len(raw) - len(raw) // 4])
    elif kind == "no_pixels":  # the transfer stopped right before the pixel data element
        path.write_bytes(raw[: raw.rfind(b"\xe0\x7f\x10\x00")])
    else:  # re-encoded, then the codestream overwritten: header fine, pixels undecodable
        ds = pydicom.dcmread(src)
        ds.compress(pydicom.uid.RLELossless, generate_instance_uid=False)  # the same instance
        frame = bytearray(ds.PixelData)
        frame[16:-16] = b"\xff" * (len(frame) - 32)
        ds.PixelData = bytes(frame)
        ds.save_as(path)
    return path


def duplicate_variants(seeds: list[Path], out: Path) -> list[tuple[str, Path, str | None]]:
    """Folders holding several copies of one instance (same SOPInstanceUID) of mixed quality.

    Per seed: the intact copy with every broken kind (:data:`BROKEN_COPIES`) in all 24 path orders
    (``mixed``), an identical re-sent copy (``identical``) and the broken copies alone
    (``all_broken``).

    Returns:
        ``[(case, folder, name of the intact copy or None)]``.
    """
    import itertools

    cases: list[tuple[str, Path, str | None]] = []
    for i, src in enumerate(seeds):
        kinds = ("intact", *BROKEN_COPIES)
        for n, order in enumerate(itertools.permutations(kinds)):
            folder = out / f"s{i}_mixed_{n}"
            folder.mkdir(parents=True)
            for rank, kind in enumerate(order):  # file names put the copies in this path order
                path = folder / f"{rank}_copy.dcm"
                if kind == "intact":
                    path.write_bytes(src.read_bytes())
                else:
                    _broken_copy(src, kind, path)
            cases.append((f"duplicates/{i}/mixed_{'-'.join(order)}", folder, f"{order.index('intact')}_copy.dcm"))
        folder = out / f"s{i}_identical"
        folder.mkdir(parents=True)
        for name in ("a.dcm", "b.dcm"):
            (folder / name).write_bytes(src.read_bytes())
        cases.append((f"duplicates/{i}/identical", folder, "a.dcm"))
        folder = out / f"s{i}_all_broken"
        folder.mkdir(parents=True)
        for kind in BROKEN_COPIES:
            _broken_copy(src, kind, folder / f"{kind}.dcm")
        cases.append((f"duplicates/{i}/all_broken", folder, None))
    return cases


# ---------------------------------------------------------------------------------------------- FHIR


def _diagnostic_report(**changes: object) -> dict:
    report: dict = {
        "resourceType": "DiagnosticReport",
        "id": "r1",
        "status": "final",
        "code": {"text": "Chest X-ray"},
        "identifier": [
            {
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
                "value": "A1",
            }
        ],
        "conclusion": "FINDINGS: Lungs are clear. IMPRESSION: Normal.",
    }
    for key, value in changes.items():
        if value is None:
            report.pop(key, None)
        else:
            report[key] = value
    return report


def _nested(depth: int) -> str:
    return '{"resourceType": "DiagnosticReport", "extension": ' + "[" * depth + "]" * depth + "}"


def fhir_variants(valid: list[Path], out: Path, *, seed: int = 11) -> list[tuple[str, Path]]:
    """Malformed FHIR JSON/NDJSON/Bundle files, plus truncated and bit-flipped copies of ``valid``.

    Returns:
        ``[(case, path)]``.
    """
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    big = "x" * (5 * 2**20)
    documents: dict[str, str | bytes] = {
        "empty.json": b"",
        "whitespace.json": b"   \n\t ",
        "invalid_json.json": '{"resourceType": "DiagnosticReport", ',
        "null.json": "null",
        "number.json": "42",
        "list.json": "[1, 2, 3]",
        "string.json": '"DiagnosticReport"',
        "non_utf8.json": b'{"resourceType": "DiagnosticReport", "conclusion": "\xff\xfe\xfa"}',
        "utf16.json": json.dumps(_diagnostic_report()).encode("utf-16"),
        "nul_bytes.json": b"\x00" * 64,
        "wrong_type_patient.json": json.dumps({"resourceType": "Patient", "id": "p1"}),
        "no_resource_type.json": json.dumps({"status": "final"}),
        "resource_type_number.json": json.dumps({"resourceType": 5}),
        "missing_status.json": json.dumps(_diagnostic_report(status=None)),
        "missing_code.json": json.dumps(_diagnostic_report(code=None)),
        "status_number.json": json.dumps(_diagnostic_report(status=5)),
        "status_unknown.json": json.dumps(_diagnostic_report(status="maybe")),
        "code_string.json": json.dumps(_diagnostic_report(code="chest")),
        "identifier_dict.json": json.dumps(_diagnostic_report(identifier={"value": "A1"})),
        "presented_form_bad_base64.json": json.dumps(
            _diagnostic_report(conclusion=None, presentedForm=[{"contentType": "text/plain", "data": "!!not base64!!"}])
        ),
        "presented_form_binary.json": json.dumps(
            _diagnostic_report(conclusion=None, presentedForm=[{"contentType": "text/plain", "data": "/////w=="}])
        ),
        "conclusion_list.json": json.dumps(_diagnostic_report(conclusion=["a", "b"])),
        "no_text.json": json.dumps(_diagnostic_report(conclusion=None)),
        "huge_conclusion.json": json.dumps(_diagnostic_report(conclusion=big)),
        "huge_id.json": json.dumps(_diagnostic_report(id=big)),
        "huge_key.json": json.dumps({**_diagnostic_report(), big: 1}),
        "nested_100.json": _nested(100),
        "nested_100k.json": _nested(100_000),
        "nested_900.json": _nested(900),
        "bundle_entry_dict.json": json.dumps({"resourceType": "Bundle", "type": "collection", "entry": {"a": 1}}),
        "bundle_entry_strings.json": json.dumps(
            {"resourceType": "Bundle", "type": "collection", "entry": ["x", 1, None]}
        ),
        "bundle_resource_list.json": json.dumps(
            {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": []}]}
        ),
        "bundle_no_type.json": json.dumps({"resourceType": "Bundle", "entry": [{"resource": _diagnostic_report()}]}),
        "bundle_nested_bundle.json": json.dumps(
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": {"resourceType": "Bundle", "type": "collection"}}],
            }
        ),
        "bundle_huge_entries.json": json.dumps(
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": {"resourceType": "Observation"}}] * 50_000,
            }
        ),
        "lines.ndjson": "\n".join(
            [json.dumps(_diagnostic_report()), "{bad", "[]", "null", json.dumps({"resourceType": "Patient"}), ""]
        ),
        "only_garbage.ndjson": b"\xff\xfe\n{\n]]]\n",
        "nested.ndjson": _nested(100_000),
        "empty.ndjson": b"",
    }
    cases = []
    for name, content in documents.items():
        path = out / name
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        cases.append((f"fhir/{name}", path))
    for i, src in enumerate(valid):
        raw = src.read_bytes()
        for frac in (0.1, 0.5, 0.99):
            path = out / f"v{i}_trunc_{frac}{src.suffix}"
            path.write_bytes(raw[: int(len(raw) * frac)])
            cases.append((f"fhir_truncated/{i}/{frac}", path))
        data = bytearray(raw)
        for pos in rng.integers(0, len(data), size=16):
            data[pos] ^= 1 << int(rng.integers(0, 8))
        path = out / f"v{i}_flip{src.suffix}"
        path.write_bytes(bytes(data))
        cases.append((f"fhir_bitflip/{i}", path))
    return cases


# ------------------------------------------------------------------------------------------- reports


def report_variants(out: Path) -> list[tuple[str, Path]]:
    """Empty, huge (5 MiB), non-UTF-8, binary and odd text/CSV reports."""
    out.mkdir(parents=True, exist_ok=True)
    header = "study_uid,accession_number,report_text\n"
    files: dict[str, bytes] = {
        "empty.txt": b"",
        "blank.txt": b"  \n\n\t",
        "huge_5mb.txt": b"FINDINGS: " + b"lungs clear. " * (5 * 2**20 // 13),
        "latin1.txt": "FINDINGS: épanchement pleural, cÅur normal.".encode("latin-1"),
        "utf16.txt": "FINDINGS: clear".encode("utf-16"),
        "binary.txt": bytes(range(256)) * 8,
        "nul.txt": b"FINDINGS: clear\x00\x00",
        "bom.txt": b"\xef\xbb\xbfFINDINGS: clear. IMPRESSION: normal.",
        "one_char.txt": b".",
        "long_line.txt": b"a" * (2 * 2**20),
        "empty.csv": b"",
        "header_only.csv": header.encode(),
        "no_text_column.csv": b"study_uid,accession_number\n1.2.3,A1\n",
        "latin1.csv": (header + "1.2.3,A1,épanchement\n").encode("latin-1"),
        "huge_field.csv": (header + '1.2.3,A1,"' + "x" * (5 * 2**20) + '"\n').encode(),
        "unbalanced_quote.csv": (header + '1.2.3,A1,"never closed\n').encode(),
        "bad_uid.csv": (header + "not-a-uid,A1,FINDINGS: clear\n").encode(),
        "binary.csv": bytes(range(256)) * 8,
        "report.pdf": b"%PDF-1.4 not supported",
        "no_suffix": b"FINDINGS: clear",
    }
    cases = []
    for name, content in files.items():
        path = out / name
        path.write_bytes(content)
        cases.append((f"report/{name}", path))
    return cases


# ------------------------------------------------------------------------------------------- configs


def config_variants(out: Path) -> list[tuple[str, Path]]:
    """Invalid YAML, wrong shapes and types, out-of-range values, alias bombs, binary files, a folder."""
    out.mkdir(parents=True, exist_ok=True)
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)
    )
    files: dict[str, bytes | str] = {
        "empty.yaml": "",
        "not_yaml.yaml": "name: [unclosed\n  - : :",
        "tabs.yaml": "name:\tdemo\n\tfusion: x",
        "list.yaml": "- a\n- b\n",
        "scalar.yaml": "42\n",
        "unknown_key.yaml": "name: demo\nnot_a_key: 1\n",
        "unknown_nested_key.yaml": "training:\n  epochz: 3\n",
        "wrong_type.yaml": "training:\n  epochs: many\n",
        "negative.yaml": "training:\n  epochs: -3\n  lr: -1\n",
        "wrong_section_type.yaml": "training: 5\n",
        "bad_fusion.yaml": "fusion:\n  name: telepathy\n",
        "duplicate_labels.yaml": "labels: [a, a]\n",
        "labels_string.yaml": "labels: nodule\n",
        "image_size_bad.yaml": "data:\n  image_size: [32]\n",
        "max_pixels_zero.yaml": "data:\n  max_pixels: 0\n",
        "python_tag.yaml": "name: !!python/object/apply:os.system ['echo pwned']\n",
        "alias_bomb.yaml": laughs + "name: *i\n",
        "deep.yaml": "a: " + "[" * 10_000 + "]" * 10_000 + "\n",
        "huge_string.yaml": "name: " + "x" * (5 * 2**20) + "\n",
        "non_utf8.yaml": b"name: \xff\xfe\n",
        "binary.yaml": bytes(range(256)) * 4,
        "nul.yaml": b"name: demo\x00\n",
    }
    cases = []
    for name, content in files.items():
        path = out / name
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        cases.append((f"config/{name}", path))
    folder = out / "a_folder.yaml"
    folder.mkdir(exist_ok=True)
    cases.append(("config/a_folder.yaml", folder))
    cases.append(("config/missing.yaml", out / "missing.yaml"))
    return cases
