"""A throwaway Orthanc PACS for tests: loopback only, DICOMweb plugin, HTTP basic auth.

:func:`running_orthanc` starts the Debian ``Orthanc`` binary as a subprocess with a generated JSON
configuration in a temporary folder (free HTTP port, DICOM port off, storage in the folder, the
DICOMweb plugin loaded, authentication on with a generated user and password), waits until
``/system`` answers and stops the server on exit.

When Orthanc or its DICOMweb plugin is not installed the tests using it are skipped with the reason,
unless ``MEDFUSION_REQUIRE_SYSTEM_TESTS=1`` (CI), where they fail.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

#: Set to ``1`` (CI) to turn "system tool missing" skips into failures.
REQUIRE_ENV = "MEDFUSION_REQUIRE_SYSTEM_TESTS"
#: Where Debian/Ubuntu put the DICOMweb plugin (``orthanc-dicomweb`` package).
PLUGIN_GLOBS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so*",
    "/usr/lib/orthanc/libOrthancDicomWeb.so*",
    "/usr/lib/*/orthanc/libOrthancDicomWeb.so*",
    "/usr/local/share/orthanc/plugins/libOrthancDicomWeb.so*",
)
STARTUP_TIMEOUT_S = 60.0


def skip_or_fail(reason: str) -> None:
    """Skip the test with ``reason``, or fail it when ``MEDFUSION_REQUIRE_SYSTEM_TESTS=1``."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1, so this is a failure, not a skip)")
    pytest.skip(reason)


def find_orthanc() -> str | None:
    """Path of the ``Orthanc`` executable, or None."""
    return shutil.which("Orthanc") or next(
        (p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc") if os.access(p, os.X_OK)), None
    )


def find_dicomweb_plugin() -> str | None:
    """Path of the Orthanc DICOMweb plugin shared library, or None."""
    for pattern in PLUGIN_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class UploadResult:
    """Outcome of :meth:`OrthancServer.upload`.

    Attributes:
        stored: Files Orthanc stored (or already had).
        refused: ``(file, reason)`` for files Orthanc refused.
    """

    stored: list[Path] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)


@dataclass
class OrthancServer:
    """A running Orthanc.

    Attributes:
        url: REST root, ``http://127.0.0.1:PORT``.
        username: The generated user.
        password: Its generated password.
        folder: Configuration, storage and log folder.
        process: The server process.
    """

    url: str
    username: str
    password: str
    folder: Path
    process: subprocess.Popen

    @property
    def dicomweb_url(self) -> str:
        """DICOMweb root (QIDO-RS / WADO-RS / STOW-RS), ``http://127.0.0.1:PORT/dicom-web``."""
        return f"{self.url}/dicom-web"

    @property
    def auth(self) -> tuple[str, str]:
        """``(username, password)`` for requests."""
        return (self.username, self.password)

    def upload(self, paths: Iterable[Path]) -> UploadResult:
        """Store files through the REST API (``POST /instances``), one request per file."""
        result = UploadResult()
        with requests.Session() as session:
            session.auth = self.auth
            for path in paths:
                response = session.post(f"{self.url}/instances", data=Path(path).read_bytes(), timeout=60)
                if response.ok:
                    result.stored.append(Path(path))
                else:
                    result.refused.append((Path(path), f"HTTP {response.status_code}"))
        return result

    def log_tail(self, n_chars: int = 3000) -> str:
        """The end of Orthanc's log (for failure messages)."""
        log = self.folder / "orthanc.log"
        return log.read_text(errors="replace")[-n_chars:] if log.exists() else ""


def _config(folder: Path, port: int, plugin: str, username: str, password: str) -> dict:
    return {
        "Name": "medfusion-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "StorageCompression": False,
        "HttpServerEnabled": True,
        "HttpPort": port,
        "RemoteAccessAllowed": False,  # loopback clients only
        "AuthenticationEnabled": True,
        "RegisteredUsers": {username: password},
        "DicomServerEnabled": False,
        "HttpThreadsCount": 4,
        "ConcurrentJobs": 1,
        "SaveJobs": False,
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "Host": f"127.0.0.1:{port}"},
    }


def _wait_until_up(server: OrthancServer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with status {server.process.returncode}:\n{server.log_tail()}")
        try:
            if requests.get(f"{server.url}/system", auth=server.auth, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"Orthanc did not answer /system within {timeout_s:.0f} s:\n{server.log_tail()}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@contextmanager
def running_orthanc(folder: Path) -> Iterator[OrthancServer]:
    """Start Orthanc in ``folder`` (skipped or failed when it is not installed), stop it on exit."""
    binary, plugin = find_orthanc(), find_dicomweb_plugin()
    if binary is None:
        skip_or_fail("Orthanc is not installed (Debian package 'orthanc')")
    if plugin is None:
        skip_or_fail("the Orthanc DICOMweb plugin is not installed (Debian package 'orthanc-dicomweb')")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    username, password = "medfusion", secrets.token_urlsafe(16)
    config = folder / "orthanc.json"
    config.write_text(json.dumps(_config(folder, port, plugin, username, password), indent=2))
    with open(folder / "orthanc.log", "wb") as log:
        process = subprocess.Popen([binary, str(config)], stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    server = OrthancServer(f"http://127.0.0.1:{port}", username, password, folder, process)
    try:
        _wait_until_up(server, STARTUP_TIMEOUT_S)
        yield server
    finally:
        _stop(process)
