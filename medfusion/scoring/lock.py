"""One scoring job per output folder: an exclusive ``flock`` on ``DIR/score.lock`` for the job's life.

The lock belongs to the open file, so it goes when the job's process ends in any way (including
``kill -9``); there is no stale lock to clean up. The holder writes its pid, host and start time into
the file, so that a second job into the same folder is refused at once with those details:

>>> with OutputLock(Path("scores")):   # a second job here raises MedfusionError naming pid and host
...     ...

The file stays after the job (deleting a lock file races with another job opening it). Readers of
a finished job (``read_results``, the review app) do not take the lock.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Self

from medfusion.errors import MedfusionError

LOCK_FILE = "score.lock"


class OutputLock:
    """Exclusive lock on a job's output folder (created when missing).

    Args:
        out_dir: The output folder.

    Raises:
        MedfusionError: (on enter) the folder cannot be created or written, or another job holds it.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Create the folder, open the lock file and lock it (never waits).

        Raises:
            MedfusionError: See the class.
        """
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise MedfusionError(f"{self.out_dir}: output folder is a file, not a folder")
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise MedfusionError(f"{self.out_dir}: output folder {_cannot('create or write', exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise MedfusionError(f"{self.out_dir}: output folder {_cannot('lock', exc)}") from None
            raise MedfusionError(
                f"{self.out_dir}: another scoring job is writing to this output folder ({holder}); "
                "wait for it to finish or use another --out"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(_holder_info()) + "\n").encode("utf-8"), 0)
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)  # also releases the lock
            raise MedfusionError(f"{self.out_dir}: output folder {_cannot('write', exc)}") from None
        self._fd = fd

    def release(self) -> None:
        """Unlock (closing the file releases the lock); no-op when not held."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _cannot(what: str, exc: OSError) -> str:
    """``not usable: cannot <what> <file>: <reason>``."""
    where = f" {exc.filename}" if exc.filename else ""
    return f"not usable: cannot {what}{where}: {exc.strerror or type(exc).__name__}"


def _holder_info() -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _read_holder(fd: int) -> str:
    """``pid 123 on host h, started <UTC>`` from the lock file of the job holding it."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"pid {info['pid']} on host {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its pid and host are not written yet"
