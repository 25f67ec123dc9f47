"""``python -m tests.scoring.die_after_rename PART <medfusion CLI arguments...>``: run the CLI and SIGKILL
this process group the moment results part ``PART`` (e.g. ``part-000001``) has been renamed into place,
before the ledger hears of it: the worst moment for a crash (OOM killer, power loss, preemption).
``PART`` may also name ``FOLDER/NAME`` (e.g. ``sr/part-000001``, a part's DICOM SR folder): the kill
then follows the rename of ``NAME`` into ``FOLDER``.

The crash is injected through CPython's audit hooks (PEP 578), an extension point of the interpreter,
so the production code carries no test hook. ``os.replace`` raises the ``os.rename`` audit event just
before it renames; for the watched part the hook performs that same rename itself and then kills the
process group, so the job never returns from ``os.replace`` and never reaches its commit. The process
must lead its own group (``subprocess.Popen(..., start_new_session=True)``): the kill takes the job's
worker processes along, as a scheduler killing the job would, and nothing else.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The folder the job's Parquet parts are renamed into (``medfusion.scoring.writer.RESULTS_DIR``).
RESULTS_DIR = "results"


def kill_after_rename(part: str) -> Callable[[str, tuple[Any, ...]], None]:
    """An audit hook that completes the rename of ``results/<part>.parquet`` (or of ``FOLDER/NAME`` when
    ``part`` is such a path) and SIGKILLs the process group."""
    folder, target = part.split("/", 1) if "/" in part else (RESULTS_DIR, f"{part}.parquet")
    armed = True

    def hook(event: str, args: tuple[Any, ...]) -> None:
        nonlocal armed
        if event != "os.rename" or not armed:
            return
        src, dst = os.fsdecode(args[0]), Path(os.fsdecode(args[1]))
        if dst.name == target and dst.parent.name == folder:
            armed = False  # the rename below raises the event again
            os.replace(src, dst)  # what the job was about to do
            os.killpg(os.getpgrp(), signal.SIGKILL)

    return hook


def main(argv: list[str]) -> int:
    """Install the hook for ``argv[0]`` and run the medfusion CLI with ``argv[1:]``."""
    if os.getpgrp() != os.getpid():
        print("die_after_rename must lead its process group (start it with start_new_session=True)", file=sys.stderr)
        return 2
    sys.addaudithook(kill_after_rename(argv[0]))
    from medfusion.cli import app

    app(argv[1:], prog_name="medfusion")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
