"""A throwaway PostgreSQL server for tests: Debian's ``postgresql`` binaries, loopback only.

:func:`running_postgres` runs ``initdb`` and ``postgres`` from ``/usr/lib/postgresql/<version>/bin``
in a fresh folder under the system temp dir (data, unix socket and log there), on a free loopback
port, with durability off (tests do not need it; it makes commits and ``CREATE DATABASE`` fast).
Local socket connections are trusted (the superuser ``postgres`` administers through them); TCP
connections need a password (scram), as an app server's would. The server is stopped (fast
shutdown, bounded wait, then killed) and its folder removed on exit.

PostgreSQL refuses to run as root. When the tests run as root (CI, this container) the folder is
handed to the ``postgres`` system user the Debian package creates and both programs run as that
user (``subprocess`` switches user in the child; no ``su``/``sudo`` needed).

When the binaries or psycopg are missing the tests using it are skipped with the reason, unless
``MEDFUSION_REQUIRE_SYSTEM_TESTS=1`` (CI), where they fail.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.scoring.orthanc_server import free_port, skip_or_fail

STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
#: The role an app server logs in as (owns the test databases).
APP_ROLE = "medfusion"


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb`` and ``postgres``, or None."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    found = [d for d in found if os.access(d / "postgres", os.X_OK)]
    return max(found, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0) if found else None


@dataclass
class PostgresServer:
    """A running PostgreSQL.

    Attributes:
        port: TCP port on 127.0.0.1.
        socket_dir: Folder of the unix socket (superuser access, trusted).
        password: The app role's password.
        folder: Data, socket and log folder.
        process: The ``postgres`` process.
    """

    port: int
    socket_dir: Path
    password: str
    folder: Path
    process: subprocess.Popen
    _counter: Iterator[int] = field(default_factory=itertools.count)

    def admin(self, dbname: str = "postgres") -> Any:
        """A superuser psycopg connection (autocommit) through the unix socket."""
        import psycopg

        return psycopg.connect(
            host=str(self.socket_dir), port=self.port, user="postgres", dbname=dbname, autocommit=True
        )

    def url(self, dbname: str, *, user: str = APP_ROLE, password: str | None = None) -> str:
        """``postgresql://user:password@127.0.0.1:port/dbname`` (the app role's password by default)."""
        secret = self.password if password is None else password
        auth = f"{user}:{secret}" if secret else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        """A new empty database owned by the app role; returns its name."""
        name = f"review_{os.getpid()}_{next(self._counter)}"
        with self.admin() as con:
            con.execute(f"CREATE DATABASE {name} OWNER {APP_ROLE}")
        return name

    def log_tail(self, n_chars: int = 3000) -> str:
        """The end of the server log (for failure messages)."""
        log = self.folder / "postgres.log"
        return log.read_text(errors="replace")[-n_chars:] if log.exists() else ""


def _run_as() -> dict[str, Any]:
    """``subprocess`` arguments that run PostgreSQL's programs as a non-root user."""
    if os.geteuid() != 0:
        return {}
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        skip_or_fail("running as root and there is no 'postgres' user to run PostgreSQL as")
        raise AssertionError("unreachable") from None
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Start a PostgreSQL server; skip (or fail on CI) when it is not installed."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        skip_or_fail("PostgreSQL is not installed (Debian package 'postgresql': /usr/lib/postgresql/*/bin)")
        return
    try:
        import psycopg  # noqa: F401
    except ImportError:
        skip_or_fail("psycopg is not installed (pip install 'medfusion[postgres]')")
        return
    run_as = _run_as()
    # A short path (unix socket paths hold ~100 characters); as root, under /tmp, which the postgres
    # user can traverse (TMPDIR or pytest's tmp folders may be private to root).
    folder = Path(tempfile.mkdtemp(prefix="medfusion-pg-", dir="/tmp" if run_as else None))
    process: subprocess.Popen | None = None
    try:
        if run_as:
            os.chown(folder, run_as["user"], run_as["group"])
        password = secrets.token_urlsafe(16)
        superuser_pw = folder / "superuser.pw"
        superuser_pw.write_text(secrets.token_urlsafe(16))
        if run_as:
            os.chown(superuser_pw, run_as["user"], run_as["group"])
        init = subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(folder / "data"),
                "-U",
                "postgres",
                f"--pwfile={superuser_pw}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-locale",
                "--encoding=UTF8",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=folder,  # the postgres user may not be allowed into the caller's folder
            **run_as,
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed ({init.returncode}): {init.stderr[-2000:]}")
        port = free_port()
        with open(folder / "postgres.log", "wb") as log:
            process = subprocess.Popen(
                [
                    str(bin_dir / "postgres"),
                    "-D",
                    str(folder / "data"),
                    "-k",
                    str(folder),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=60",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=folder,
                **run_as,
            )
        server = PostgresServer(port, folder, password, folder, process)
        _wait_ready(server)
        with server.admin() as con:
            con.execute(f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{password}'")
        yield server
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(folder, ignore_errors=True)


def _wait_ready(server: PostgresServer) -> None:
    import psycopg

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"postgres exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            with server.admin():
                return
        except psycopg.OperationalError as err:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"postgres did not accept connections in {STARTUP_TIMEOUT_S:.0f} s ({err}):\n{server.log_tail()}"
                ) from None
            time.sleep(0.1)


def _stop(process: subprocess.Popen) -> None:
    """Fast shutdown (SIGINT: roll back, disconnect, exit), then kill after a bounded wait."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
