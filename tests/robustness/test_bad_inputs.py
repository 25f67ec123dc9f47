"""Bad input never crashes a reader: it is handled, or rejected with our typed error naming the file.

Each input is read in a child process bounded in time (:data:`harness.TIME_LIMIT_S`) whose peak
memory growth is measured (:mod:`tests.robustness.harness`). The terminal summary prints the counts
per family; ``python -m tests.robustness`` prints the full table with rejection reasons.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.data.test_pydicom_corpus import corpus_files
from tests.robustness import fuzz
from tests.robustness.harness import CRASHED, HANDLED, REJECTED, TIME_LIMIT_S, BoundedRunner, Tally, report_line

ROOT = Path(__file__).resolve().parents[2]
#: Peak RSS growth allowed for any one input (the largest corpus files decode to ~100 MiB of float32).
MEMORY_LIMIT_MB = 1024
#: Peak RSS growth allowed for an image whose header claims billions of pixels: refused before allocation.
HUGE_IMAGE_MEMORY_MB = 64
#: Demo files used as fuzzing seeds.
N_SEEDS = 6


def _check(title: str, tally: Tally) -> dict[str, int]:
    text = report_line(title, tally)
    print(text)  # noqa: T201 - shown with -s; the counts also go to the terminal summary
    counts = tally.counts
    assert counts[CRASHED] == 0, text
    assert counts["tried"] == counts[HANDLED] + counts[REJECTED]
    for o in tally.outcomes:
        assert o.seconds < TIME_LIMIT_S, (o.case, o.seconds)
        assert o.peak_growth_mb < MEMORY_LIMIT_MB, (o.case, o.peak_growth_mb)
    return counts


def _valid_dicom_seeds(cohort: Path, n: int) -> list[Path]:
    """``n`` demo files that read, spread over the cohort's folders and transfer syntaxes."""
    from medfusion.data.dicom import read_dicom
    from medfusion.errors import DicomReadError

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
    files = corpus_files()
    tally = runner.run_all("dicom", [(f"corpus/{p.parent.name}/{p.name}", p) for p in files])
    counts = _check("pydicom test corpus", tally)
    assert counts["tried"] == len(files) > 50
    assert counts[HANDLED] >= 90  # 167 of 271 with pydicom 3.0.2, pydicom-data and the installed plugins


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
    shutil.copy(ROOT / "configs" / "demo.yaml", control)
    tally = runner.run_all("config", [("control/demo.yaml", control), *fuzz.config_variants(tmp_path / "bad")])
    _check("bad configs", tally)
    outcomes = tally.by_case()
    assert outcomes["control/demo.yaml"].status == HANDLED
    for name in ("alias_bomb.yaml", "python_tag.yaml", "deep.yaml", "a_folder.yaml", "non_utf8.yaml", "unknown_key.yaml"):
        assert outcomes[f"config/{name}"].status == REJECTED, outcomes[f"config/{name}"]
    assert outcomes["config/alias_bomb.yaml"].seconds < 5


def test_runner_bounds_a_hang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness itself: a reader that hangs is killed at the bound and counted as a crash."""
    from tests.robustness import harness

    monkeypatch.setitem(harness.READERS, "hang", lambda path: __import__("time").sleep(60))
    with BoundedRunner(time_limit_s=1.0) as bounded:
        o = bounded.run("hang", tmp_path, "hang")
        assert o.status == CRASHED and "killed" in o.detail
        assert bounded.run("config", tmp_path / "missing.yaml", "after").status == REJECTED  # replaced child


def test_runner_measures_peak_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness itself: a 256 MiB allocation shows up as peak growth (so the memory bounds above mean something)."""
    import numpy as np

    from tests.robustness import harness

    monkeypatch.setitem(harness.READERS, "alloc", lambda path: (HANDLED, str(np.ones(2**25).sum())))
    with BoundedRunner() as bounded:
        o = bounded.run("alloc", tmp_path, "alloc")
    assert o.status == HANDLED and o.peak_growth_mb > 200, o
