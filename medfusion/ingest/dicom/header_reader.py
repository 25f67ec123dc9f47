"""Read DICOM headers in a child process, within a wall-time bound per file.

Header reads are bounded in bytes (:func:`~medfusion.ingest.dicom.read.read_dicom_header`), but a crafted
header can still keep pydicom busy for minutes (millions of tiny elements in a few hundred MB).
:class:`BoundedHeaderReader` reads each header in one long-lived child process and waits at most
``timeout_s`` for it; beyond that the file is rejected and the child is killed and replaced, so no
single file can stall discovery.
"""

from __future__ import annotations

from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Self

from medfusion.errors import DicomReadError, MedfusionError
from medfusion.processes import worker_context

#: Longest wait for the child to start (the first start may also start the forkserver), seconds.
START_TIMEOUT_S = 600.0


def _serve(conn: Connection, max_bytes: int | None) -> None:
    """Child loop: a path in, ``(True, meta)`` or ``(False, reason)`` out; None ends it."""
    from medfusion.ingest.dicom.read import read_dicom_header
    from medfusion.privacy import install_log_redaction

    install_log_redaction()  # identifiers this child reads never reach a log line
    conn.send("ready")
    while (path := conn.recv()) is not None:
        try:
            conn.send((True, read_dicom_header(path, max_bytes=max_bytes)))
        except DicomReadError as exc:
            conn.send((False, exc.reason))


class BoundedHeaderReader:
    """:func:`~medfusion.ingest.dicom.read.read_dicom_header` with a wall-time bound per file.

    Use as a context manager (the child is stopped on exit). Not thread-safe: one caller at a time.

    Args:
        timeout_s: Longest a header read may take, seconds.
        max_bytes: The reader's byte bound (None: its default).
    """

    def __init__(self, timeout_s: float, *, max_bytes: int | None = None) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self._proc: Any = None
        self._conn: Connection | None = None

    def __call__(self, path: str | Path) -> dict[str, Any]:
        """The header meta of ``path`` (see :func:`~medfusion.ingest.dicom.read.read_dicom_header`).

        Raises:
            DicomReadError: The header cannot be read, its read exceeded ``timeout_s`` (the child was
                stopped), or the child died reading it.
        """
        path = Path(path)
        conn = self._connection()
        conn.send(str(path))
        if not conn.poll(self.timeout_s):
            self._kill()
            raise DicomReadError(path, f"reading the header exceeded {self.timeout_s:g} s (stopped)")
        try:
            ok, value = conn.recv()
        except EOFError:
            code = self._proc.exitcode if self._proc is not None else None
            self._kill()
            raise DicomReadError(path, f"the header reader process died reading it (exit code {code})") from None
        if ok:
            return value
        raise DicomReadError(path, value)

    def _connection(self) -> Connection:
        if self._proc is not None and self._proc.is_alive() and self._conn is not None:
            return self._conn
        self._kill()
        ctx = worker_context()
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, self.max_bytes), daemon=True, name="medfusion-headers")
        try:
            self._proc.start()
        except (AssertionError, OSError) as exc:  # e.g. "daemonic processes are not allowed to have children"
            self._proc = None
            parent.close()
            raise MedfusionError(f"cannot start the DICOM header reader process: {exc}") from exc
        finally:
            child.close()
        self._conn = parent
        try:
            started = parent.poll(START_TIMEOUT_S) and parent.recv() == "ready"
        except EOFError:  # the child died starting
            started = False
        if not started:
            self._kill()
            raise MedfusionError(f"the DICOM header reader process did not start within {START_TIMEOUT_S:g} s")
        return parent

    def _kill(self) -> None:
        if self._proc is not None and self._proc.pid is not None:
            self._proc.kill()
            self._proc.join(10)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def close(self) -> None:
        """Stop the child (asked first, killed if it does not end)."""
        if self._proc is not None and self._proc.is_alive() and self._conn is not None:
            try:
                self._conn.send(None)
                self._proc.join(5)
            except OSError:
                pass
        self._kill()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
