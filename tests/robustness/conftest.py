"""Fixtures of the robustness suite: a tiny seeded demo cohort and a bounded reader process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.robustness.harness import BoundedRunner

#: Demo cohort size: enough distinct seed files for the DICOM and FHIR variants, seconds to make.
N_STUDIES = 20


@pytest.fixture(scope="package")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20-study demo cohort (64 px images) generated for this package."""
    from medfusion.config import DemoCohortConfig
    from medfusion.datasets.demo.cohort import generate_demo_cohort

    root = tmp_path_factory.mktemp("robustness") / "cohort"
    generate_demo_cohort(root, DemoCohortConfig(n_studies=N_STUDIES, image_size=64), progress=False)
    return root


@pytest.fixture(scope="package")
def runner() -> Iterator[BoundedRunner]:
    """One reader child process per package (replaced after a timeout)."""
    with BoundedRunner() as bounded:
        yield bounded


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Counts per input family (tried / handled / rejected / crashed / hung) and the total."""
    from tests.robustness.harness import CRASHED, HANDLED, HUNG, REJECTED, RESULTS

    if not RESULTS:
        return
    terminalreporter.section("robustness: inputs tried / handled / rejected / crashed / hung")
    total = {"tried": 0, HANDLED: 0, REJECTED: 0, CRASHED: 0, HUNG: 0}
    for title, tally in RESULTS.items():
        terminalreporter.write_line(tally.format(title).splitlines()[0])
        for key, n in tally.counts.items():
            total[key] += n
    terminalreporter.write_line(
        f"TOTAL: {total['tried']} inputs tried, {total[HANDLED]} handled, {total[REJECTED]} rejected, "
        f"{total[CRASHED]} crashed, {total[HUNG]} hung"
    )
