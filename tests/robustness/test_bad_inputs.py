"""Bad input never crashes or hangs a reader: it is handled, or rejected with our typed error naming
the file, within its time bound.

Each input is read in a child process bounded in time (:data:`harness.TIME_LIMIT_S`, or a family's
tighter bound) whose peak memory growth is measured (:mod:`tests.robustness.harness`). The terminal
summary prints the counts per family (tried / handled / rejected / crashed / hung);
``python -m tests.robustness`` prints the full table with rejection reasons.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.robustness import fuzz
from tests.robustness.corpus import corpus_files
from tests.robustness.harness import (
    CRASHED,
    DISCOVERY_FILE_TIMEOUT_S,
    HANDLED,
    HUNG,
    REJECTED,
    TIME_LIMIT_S,
    BoundedRunner,
    Tally,
    report_line,
)

ROOT = Path(__file__).resolve().parents[2]
#: Peak RSS growth allowed for any one input (the largest corpus files decode to ~100 MiB of float32).
MEMORY_LIMIT_MB = 1024
#: Peak RSS growth allowed for an image whose header claims billions of pixels: refused before allocation.
HUGE_IMAGE_MEMORY_MB = 64
#: Per-file bound on reading one corpus file, seconds (the slowest takes ~2 s on a busy 2-core box).
CORPUS_FILE_BOUND_S = 20.0
#: Demo files used as fuzzing seeds.
N_SEEDS = 6


def _check(title: str, tally: Tally) -> dict[str, int]:
    text = report_line(title, tally)
    print(text)  # noqa: T201 - shown with -s; the counts also go to the terminal summary
    counts = tally.counts
    assert counts[CRASHED] == 0, text
    assert counts[HUNG] == 0, text
    assert counts["tried"] == counts[HANDLED] + counts[REJECTED]
    for o in tally.outcomes:
        assert o.seconds < TIME_LIMIT_S, (o.case, o.seconds)
        assert o.peak_growth_mb < MEMORY_LIMIT_MB, (o.case, o.peak_growth_mb)
    return counts


def _valid_dicom_seeds(cohort: Path, n: int) -> list[Path]:
    """``n`` demo files that read, spread over the cohort's folders and transfer syntaxes."""
    from medfusion.errors import DicomReadError
    from medfusion.ingest.dicom.read import read_dicom

    good = []
    for path in sorted(p for p in (cohort / "dicom").rglob("*") if p.is_file()):
        try:
            read_dicom(path)
            good.append(path)
        except DicomReadError:
            continue
    step = max(1, len(good) // n)
    return good[::step][:n]


@pytest.mark.timeout(600)
def test_pydicom_corpus_bounded(runner: BoundedRunner) -> None:
    """The one pass over pydicom's corpus: each file gives a finite float32 ``(frames, 1 or 3, rows, cols)``
    image in [0, 1] or a one-line :class:`~medfusion.errors.DicomReadError` naming it, within
    :data:`CORPUS_FILE_BOUND_S` and :data:`MEMORY_LIMIT_MB`."""
    files = corpus_files()
    tally = runner.run_all("dicom", [(f"corpus/{p.parent.name}/{p.name}", p) for p in files], CORPUS_FILE_BOUND_S)
    counts = _check("pydicom test corpus", tally)
    assert counts["tried"] == len(files) > 50
    assert any(p.name == "CT_small.dcm" for p in files)
    # 167 of 271 read with pydicom 3.0.2, pydicom-data and the installed plugins (``python -m tests.robustness``)
    assert counts[HANDLED] >= 90
    cases = tally.by_case()
    for name in ("CT_small.dcm", "MR_small_jp2klossless.dcm"):  # plain and JPEG 2000: the codecs are installed
        assert cases[f"corpus/test_files/{name}"].status == HANDLED, cases[f"corpus/test_files/{name}"]


@pytest.mark.timeout(300)
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_fuzzed_demo_dicom(runner: BoundedRunner, tiny_cohort: Path, tmp_path: Path) -> None:
    seeds = _valid_dicom_seeds(tiny_cohort, N_SEEDS)
    assert len(seeds) == N_SEEDS
    cases = [(f"control/{i}", p) for i, p in enumerate(seeds)] + fuzz.dicom_variants(seeds, tmp_path)
    tally = runner.run_all("dicom", cases)
    counts = _check("fuzzed demo DICOM", tally)
    outcomes = tally.by_case()
    assert counts["tried"] == N_SEEDS * (
        1 + len(fuzz.TRUNCATE_AT) + len(fuzz.BIT_FLIPS) + len(fuzz.WRONG_SYNTAXES) + 2 + len(fuzz.HUGE_DIMENSIONS)
    )
    for case, o in outcomes.items():
        family = case.split("/")[0]
        if family == "control":
            assert o.status == HANDLED, o
        if family in ("no_pixels", "huge") or (family == "truncated" and int(case.split("/")[-1]) <= 132):
            assert o.status == REJECTED, o
        if family == "huge":  # refused from the header, before any pixel buffer exists
            assert "max_pixels" in o.detail, o
            assert o.peak_growth_mb < HUGE_IMAGE_MEMORY_MB, o
        if case.endswith(("unknown_uid", "not_a_uid")):
            assert o.status == REJECTED and "transfer syntax" in o.detail, o
    header_tally = runner.run_all("dicom_header", cases)
    _check("fuzzed demo DICOM (header only)", header_tally)


@pytest.mark.timeout(300)
def test_malformed_fhir(runner: BoundedRunner, tiny_cohort: Path, tmp_path: Path) -> None:
    valid = sorted(p for p in (tiny_cohort / "reports").iterdir() if p.suffix in (".json", ".ndjson"))
    assert valid
    cases = [(f"control/{p.name}", p) for p in valid] + fuzz.fhir_variants(valid, tmp_path)
    tally = runner.run_all("reports", cases)
    _check("malformed FHIR (files)", tally)
    outcomes = tally.by_case()
    for p in valid:
        assert outcomes[f"control/{p.name}"].status == HANDLED
    for name in ("invalid_json.json", "non_utf8.json", "wrong_type_patient.json", "nested_100k.json", "empty.json"):
        assert outcomes[f"fhir/{name}"].status == REJECTED, outcomes[f"fhir/{name}"]
    assert "too long" in outcomes["fhir/huge_conclusion.json"].detail
    assert "nested too deeply" in outcomes["fhir/nested_100k.json"].detail
    # The pyfunc's fhir_report column: one JSON document given as a string.
    string_tally = runner.run_all("fhir_string", [c for c in cases if not c[0].startswith("control")])
    _check("malformed FHIR (pyfunc column)", string_tally)


@pytest.mark.timeout(300)
def test_bad_reports(runner: BoundedRunner, tiny_cohort: Path, tmp_path: Path) -> None:
    cases = fuzz.report_variants(tmp_path)
    control = tmp_path / "control.txt"
    control.write_text("FINDINGS: Lungs are clear. IMPRESSION: Normal.", encoding="utf-8")
    tally = runner.run_all("reports", [("control/text", control), *cases])
    _check("empty / huge / non-UTF-8 reports", tally)
    outcomes = tally.by_case()
    assert outcomes["control/text"].status == HANDLED
    for name, why in {
        "empty.txt": "empty",
        "huge_5mb.txt": "too long",
        "latin1.txt": "UTF-8",
        "latin1.csv": "UTF-8",
        "binary.txt": "",
        "report.pdf": "unsupported",
    }.items():
        o = outcomes[f"report/{name}"]
        assert o.status == REJECTED and why in o.detail, o


@pytest.mark.timeout(300)
def test_bad_configs(runner: BoundedRunner, tmp_path: Path) -> None:
    control = tmp_path / "configs" / "demo.yaml"
    control.parent.mkdir()
    shutil.copy(ROOT / "medfusion" / "configs" / "demo.yaml", control)
    tally = runner.run_all("config", [("control/demo.yaml", control), *fuzz.config_variants(tmp_path / "bad")])
    _check("bad configs", tally)
    outcomes = tally.by_case()
    assert outcomes["control/demo.yaml"].status == HANDLED
    for name in (
        "alias_bomb.yaml",
        "python_tag.yaml",
        "deep.yaml",
        "a_folder.yaml",
        "non_utf8.yaml",
        "unknown_key.yaml",
    ):
        assert outcomes[f"config/{name}"].status == REJECTED, outcomes[f"config/{name}"]
    assert outcomes["config/alias_bomb.yaml"].seconds < 5


def test_runner_bounds_a_hang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness itself: a reader that hangs is killed at the limit and counted as hung; one that
    ends, but over its bound, is hung too."""
    from tests.robustness import harness

    monkeypatch.setitem(harness.READERS, "hang", lambda path: __import__("time").sleep(60))
    monkeypatch.setitem(harness.READERS, "slow", lambda path: (__import__("time").sleep(1.5), (HANDLED, "ok"))[1])
    with BoundedRunner(time_limit_s=1.0) as bounded:
        o = bounded.run("hang", tmp_path, "hang")
        assert o.status == HUNG and "killed" in o.detail
        assert bounded.run("config", tmp_path / "missing.yaml", "after").status == REJECTED  # replaced child
    with BoundedRunner(time_limit_s=10.0) as bounded:
        o = bounded.run("slow", tmp_path, "slow", bound_s=1.0)
        assert o.status == HUNG and "> bound 1s (handled: ok)" in o.detail, o
        assert bounded.run("slow", tmp_path, "slow", bound_s=5.0).status == HANDLED


def test_runner_measures_peak_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness itself: a 256 MiB allocation shows up as peak growth (so the memory bounds above mean something)."""
    import numpy as np

    from tests.robustness import harness

    monkeypatch.setitem(harness.READERS, "alloc", lambda path: (HANDLED, str(np.ones(2**25).sum())))
    with BoundedRunner() as bounded:
        o = bounded.run("alloc", tmp_path, "alloc")
    assert o.status == HANDLED and o.peak_growth_mb > 200, o


#: Per-input bound of the deflate family (the 600 MB bomb inflates 576 MB before it is refused).
DEFLATE_BOUND_S = 20.0
#: Peak RSS growth allowed for a deflated input (inflating keeps a 1 MiB window, not the dataset).
DEFLATE_MEMORY_MB = 96


@pytest.mark.timeout(600)
def test_deflate_end_of_stream_shapes(runner: BoundedRunner, tmp_path: Path) -> None:
    """Every way a deflate stream can end (exact, pad byte, trailing bytes, truncated, empty, never,
    not deflate data, past the inflate bound; a 64x64 image and the 250 KB 16000² zero image)."""
    cases = fuzz.deflate_variants(tmp_path)
    for kind in ("dicom_header", "dicom"):
        tally = runner.run_all(kind, cases, bound_s=DEFLATE_BOUND_S)
        _check(f"deflate end-of-stream shapes ({kind})", tally)
        for case, o in tally.by_case().items():
            assert o.peak_growth_mb < DEFLATE_MEMORY_MB, o
            complete = case.split("/")[1].startswith("complete") or case == "deflate/pydicom/small"
            if kind == "dicom_header":
                assert (o.status == HANDLED) == (complete or "truncated_in_pixels" in case or "last_byte" in case), o
            elif complete and case.endswith("/small"):
                assert o.status == HANDLED, o
            else:
                assert o.status == REJECTED, o
            if case.endswith("huge_zero") and kind == "dicom":
                assert "image too large: 16000x16000x1 pixels" in o.detail, o


@pytest.mark.timeout(600)
def test_duplicate_instances_of_mixed_quality(runner: BoundedRunner, tiny_cohort: Path, tmp_path: Path) -> None:
    """Copies of one instance (intact, truncated, cut before the pixels, garbage codestream) in every
    path order: the intact copy is the one kept, each other copy is set aside with its reason."""
    seeds = _valid_dicom_seeds(tiny_cohort, 2)
    cases = fuzz.duplicate_variants(seeds, tmp_path)
    tally = runner.run_all("study_folder", [(case, folder) for case, folder, _ in cases])
    _check("duplicate instances of mixed quality", tally)
    outcomes = tally.by_case()
    assert len(outcomes) == 2 * (24 + 2)
    for case, _, intact in cases:
        o = outcomes[case]
        if intact is None:
            assert o.status == REJECTED, o
        else:
            n_aside = 1 if case.endswith("identical") else len(fuzz.BROKEN_COPIES)
            assert o.status == HANDLED and o.detail == f"kept {intact}; {n_aside} set aside", o


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_per_file_time_bound_at_discovery(tmp_path: Path) -> None:
    """Inputs that keep a header parser busy for minutes within the byte bounds (millions of tiny
    elements) end at the per-file time bound of discovery; none is over its bound (hung)."""
    control = fuzz.slow_header_dicom(tmp_path / "control" / "ok.dcm", 10)
    from medfusion.ingest.dicom.read import read_dicom_header

    # Millions of elements, as many as this machine needs to spend 4x the bound reading the header.
    slow = fuzz.slow_dicom_beyond(tmp_path / "slow" / "many_elements.dcm", DISCOVERY_FILE_TIMEOUT_S, read_dicom_header)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a_slow.dcm").write_bytes(slow.read_bytes())
    (mixed / "b_ok.dcm").write_bytes(control.read_bytes())
    deflated = dict(fuzz.deflate_variants(tmp_path / "deflate"))
    for name in ("complete_padded/huge_zero", "bomb_private_600mb/small"):
        folder = tmp_path / name.replace("/", "_")
        folder.mkdir()
        (folder / "x.dcm").write_bytes(deflated[f"deflate/{name}"].read_bytes())
    with BoundedRunner(time_limit_s=300, daemon=False) as bounded:  # discovery starts a header reader process
        # The first discovery starts the workers' forkserver (imports torch and MONAI): minutes on a busy box.
        warmup = bounded.run("discover", control.parent, "control/warmup")
        assert warmup.status == HANDLED, warmup
        bound = 2 * DISCOVERY_FILE_TIMEOUT_S + 10  # two files at most, plus a child restart
        cases = [
            ("control/one_file", control.parent),
            ("slow/many_elements", slow.parent),
            ("slow/many_elements_then_a_good_file", mixed),
            ("deflate/huge_zero_padded", tmp_path / "complete_padded_huge_zero"),
            ("deflate/bomb_600mb", tmp_path / "bomb_private_600mb_small"),
        ]
        tally = bounded.run_all("discover", cases, bound_s=bound)
    _check("per-file time bound (discovery)", tally)
    outcomes = tally.by_case()
    assert outcomes["control/one_file"].status == HANDLED
    exceeded = f"reading the header exceeded {DISCOVERY_FILE_TIMEOUT_S:g} s (stopped)"
    assert outcomes["slow/many_elements"].status == REJECTED and outcomes["slow/many_elements"].detail == exceeded
    assert outcomes["slow/many_elements_then_a_good_file"].detail == f"1 image(s); rejected: {exceeded}"
    assert outcomes["deflate/huge_zero_padded"].detail == "1 image(s); rejected: none"
