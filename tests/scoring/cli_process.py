"""Run the ``medfusion`` command line as a real process (scoring tests).

Tests run as root here, and root ignores file modes. :func:`run_cli` with ``honour_file_modes=True``
starts the process without the capabilities that let root read and write past file modes
(``CAP_DAC_OVERRIDE``, ``CAP_DAC_READ_SEARCH``, dropped from the bounding set before ``exec``), so a
``chmod 0o555`` folder really is read-only to it, as it is to any other user.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.support.demo import ROOT

_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def _drop_mode_override() -> None:
    """In the child before ``exec``: root loses the right to ignore file modes (no-op for others)."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def cli_command(*args: str | Path) -> list[str]:
    """``python -m medfusion.cli ARGS...``."""
    return [sys.executable, "-m", "medfusion.cli", *(str(a) for a in args)]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI process (run in the checkout, so ``-m medfusion.cli`` is this one)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def run_cli(
    args: Sequence[str | Path], *, honour_file_modes: bool = False, timeout: float = 600, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the CLI to the end and capture its output.

    Args:
        args: Arguments after ``medfusion``.
        honour_file_modes: Start it without root's file-mode override (see the module docstring).
        timeout: Seconds before the test fails.
        **env: Extra environment variables.
    """
    return subprocess.run(
        cli_command(*args),
        check=False,
        cwd=ROOT,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_drop_mode_override if honour_file_modes else None,
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The non-empty lines the process wrote to stderr."""
    return [line for line in result.stderr.splitlines() if line.strip()]


def parse_dead_letter_table(text: str) -> tuple[dict[str, dict[str, int]], int]:
    """Read the dead-letter table back from a printed summary.

    Returns:
        ``{stage: {reason: count}}`` in printed order, and the printed total.
    """
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("dead letters by stage and reason"))
    assert lines[start + 1].split() == ["stage", "count", "reason"]
    table: dict[str, dict[str, int]] = {}
    for line in lines[start + 2 :]:
        stage, count, *reason = line.split(None, 2)
        if stage == "total" and not reason:
            return table, int(count)
        table.setdefault(stage, {})[reason[0]] = int(count)
    raise AssertionError("the dead-letter table has no total line")
