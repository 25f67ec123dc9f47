"""The site pseudonym salt: made once (mode 0600, race-safe), shared by every process, never the public salt
outside the demo unless asked for, and the demo needs no set-up."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from medfusion.datasets.demo.dicom_writer import DicomSpec, write_dicom
from medfusion.errors import SiteSaltError
from medfusion.ingest.dicom.studies import scan_dicom_folder
from medfusion.privacy import pseudonym
from medfusion.salt import (
    ALLOW_PUBLIC_SALT_ENV,
    HOME_ENV,
    PUBLIC_SALT,
    SALT_ENV,
    SALT_FILE_ENV,
    demo_salt,
    resolve_salt,
    site_salt_path,
)

ROOT = Path(__file__).resolve().parents[1]
ACC = "ACC7654321"


def _expected(salt: str, value: str, kind: str) -> str:
    """The pseudonym of ``value`` under ``salt``, computed independently of medfusion."""
    digest = hashlib.sha256(f"{salt}\x00{kind}\x00{value}".encode()).hexdigest()
    return f"{kind}-{digest[:16]}"


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A site whose salt file does not exist yet (``MEDFUSION_SALT_FILE``)."""
    path = tmp_path / "site" / "site_salt"
    monkeypatch.setenv(SALT_FILE_ENV, str(path))
    return path


def _in_child(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT, env=env or dict(os.environ), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_first_use_creates_a_private_salt_file_used_from_then_on(site: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert not site.exists()
    with caplog.at_level(logging.INFO, logger="medfusion.salt"):
        first = pseudonym(ACC, kind="acc")
    assert stat.S_IMODE(site.stat().st_mode) == 0o600
    salt = site.read_text().strip()
    assert len(salt) == 64 and int(salt, 16) >= 0  # secrets.token_hex(32)
    assert first == _expected(salt, ACC, "acc") != _expected(PUBLIC_SALT, ACC, "acc")
    created = [r.getMessage() for r in caplog.records if str(site) in r.getMessage()]
    assert len(created) == 1 and "created" in created[0]  # the location, once
    assert salt not in caplog.text  # never the salt itself

    caplog.clear()
    assert pseudonym(ACC, kind="acc") == first
    child = _in_child(f"from medfusion.privacy import pseudonym; print(pseudonym({ACC!r}, kind='acc'))")
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == first  # another process of the site: the same salt, nothing created
    assert "created" not in child.stderr and not caplog.records
    assert site.read_text().strip() == salt


def test_default_location_is_medfusion_home_then_the_user_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SALT_FILE_ENV, raising=False)
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "mf"))
    assert site_salt_path() == tmp_path / "mf" / "site_salt"
    monkeypatch.delenv(HOME_ENV)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert site_salt_path() == tmp_path / "xdg" / "medfusion" / "site_salt"
    monkeypatch.setenv(SALT_FILE_ENV, str(tmp_path / "elsewhere"))
    assert site_salt_path() == tmp_path / "elsewhere"


_RACER = """
import os, sys, time
from pathlib import Path
from medfusion.privacy import pseudonym
(Path(sys.argv[1]) / str(os.getpid())).touch()
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.0002)
print(pseudonym({acc!r}, kind="acc"))
"""


@pytest.mark.parametrize("round_", range(2))
def test_concurrent_first_use_from_many_processes_makes_one_salt(site: Path, tmp_path: Path, round_: int) -> None:
    ready, go, n = tmp_path / "ready", tmp_path / "go", 10
    ready.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER.format(acc=ACC), str(ready), str(go)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    deadline = time.monotonic() + 60
    while len(list(ready.iterdir())) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # all at the starting line: first use in every process at once
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    salt = site.read_text().strip()
    assert {out.strip() for out, _ in outputs} == {_expected(salt, ACC, "acc")}
    assert sum("created" in err for _, err in outputs) == 1  # one process won; the others read its salt
    assert sorted(p.name for p in site.parent.iterdir()) == ["site_salt"]  # no temporary file left behind
    assert stat.S_IMODE(site.stat().st_mode) == 0o600


@pytest.mark.parametrize("value", [PUBLIC_SALT, f" {PUBLIC_SALT}\n"])
def test_public_salt_is_refused_outside_the_demo_unless_asked(
    site: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(SALT_ENV, value)
    with pytest.raises(SiteSaltError, match=f"{SALT_ENV} is the public salt.*{ALLOW_PUBLIC_SALT_ENV}=1"):
        pseudonym(ACC, kind="acc")
    monkeypatch.setenv(ALLOW_PUBLIC_SALT_ENV, "1")  # asked for on purpose: the values older versions made
    assert pseudonym(ACC, kind="acc") == _expected(value, ACC, "acc")
    assert not site.exists()


def test_the_sites_own_secret_in_the_environment_wins_and_empty_is_refused(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SALT_ENV, "a-long-site-secret-kept-in-a-vault-0123456789")
    assert pseudonym(ACC, kind="acc") == _expected("a-long-site-secret-kept-in-a-vault-0123456789", ACC, "acc")
    assert not site.exists()
    monkeypatch.setenv(SALT_ENV, "  ")
    with pytest.raises(SiteSaltError, match="set but empty"):
        pseudonym(ACC, kind="acc")


@pytest.mark.parametrize(
    ("content", "mode", "reason"),
    [
        ("f" * 64, 0o644, "open to group or others .mode 0644.; run 'chmod 600"),
        ("f" * 64, 0o620, "open to group or others .mode 0620."),
        ("f" * 64, 0o606, "open to group or others .mode 0606."),
        ("short-salt", 0o600, "too short .10 characters"),
        ("", 0o600, "too short .0 characters"),
        ("\xe9" * 40, 0o600, "not ASCII"),
    ],
)
def test_unsafe_or_unusable_salt_files_are_refused(site: Path, content: str, mode: int, reason: str) -> None:
    site.parent.mkdir()
    site.write_text(content, encoding="latin-1")
    site.chmod(mode)
    with pytest.raises(SiteSaltError, match=reason) as info:
        pseudonym(ACC, kind="acc")
    assert str(info.value).startswith(str(site))
    assert not content or content not in str(info.value)  # the salt is never quoted


def test_a_folder_or_an_unwritable_place_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "is_a_folder"
    folder.mkdir()
    monkeypatch.setenv(SALT_FILE_ENV, str(folder))
    with pytest.raises(SiteSaltError, match="must be a regular file"):
        resolve_salt()
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    monkeypatch.setenv(SALT_FILE_ENV, str(blocker / "site_salt"))  # a file where its folder should be
    with pytest.raises(
        SiteSaltError, match=f"cannot read the site pseudonym salt: Not a directory; set {SALT_FILE_ENV}"
    ):
        resolve_salt()
    if Path("/proc/self").is_dir():  # a place no one can write, even root
        monkeypatch.setenv(SALT_FILE_ENV, "/proc/site_salt")
        with pytest.raises(
            SiteSaltError, match=f"^/proc/site_salt: cannot create the site pseudonym salt.*set {SALT_FILE_ENV}"
        ):
            resolve_salt()


def test_a_salt_problem_stops_a_dicom_scan_instead_of_rejecting_every_file(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "dicom"
    pixels = np.zeros((16, 16), dtype=np.uint16)
    write_dicom(folder / "a.dcm", pixels, DicomSpec(study_uid="1.2.3.1", series_uid="1.2.3.1.1", accession_number=ACC))
    assert scan_dicom_folder(folder).studies["1.2.3.1"].accession_pseudonym == pseudonym(ACC, kind="acc")
    monkeypatch.setenv(SALT_ENV, PUBLIC_SALT)
    with pytest.raises(SiteSaltError, match=SALT_ENV):
        scan_dicom_folder(folder)


def test_demo_salt_is_explicit_and_scoped_to_its_block(site: Path) -> None:
    seen: list[str] = []
    with demo_salt():
        assert pseudonym(ACC, kind="acc") == _expected(PUBLIC_SALT, ACC, "acc")
        other = threading.Thread(target=lambda: seen.append(pseudonym(ACC, kind="acc")))
        other.start()
        other.join()
    assert seen == [pseudonym(ACC, kind="acc")] == [_expected(site.read_text().strip(), ACC, "acc")]


@pytest.mark.slow  # a CLI process that writes a small cohort: about 30 s on 2 busy cores
def test_demo_data_runs_with_no_set_up_and_the_public_demo_salt(tmp_path: Path) -> None:
    """``medfusion demo-data`` in a fresh account (no salt anywhere): works, creates no site salt, and its
    pseudonyms are the demo salt's (the same splits on every machine)."""
    env = {k: v for k, v in os.environ.items() if k not in (SALT_ENV, SALT_FILE_ENV, ALLOW_PUBLIC_SALT_ENV, HOME_ENV)}
    env.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "home" / ".config"))
    out = tmp_path / "cohort"
    overrides = ["data.demo.n_studies=8", "data.demo.image_size=32", "data.demo.broken_files=0"]
    result = subprocess.run(
        [sys.executable, "-m", "medfusion.cli", "demo-data", "--out", str(out), *(f"--set={o}" for o in overrides)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    salt_homes = [tmp_path / "home" / ".config" / "medfusion", tmp_path / "home" / ".medfusion"]
    assert not any(p.exists() for p in salt_homes)  # no site salt needed for the demo cohort
    assert not (tmp_path / "home" / ".config" / "mlflow").exists()  # nor any MLflow telemetry state
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert len(manifest) == 8
    with demo_salt():
        for paths, patient in zip(manifest["image_paths"], manifest["patient_pseudonym"], strict=True):
            patient_id = pydicom.dcmread(paths[0], stop_before_pixels=True).PatientID
            assert patient == pseudonym(patient_id, kind="patient") == _expected(PUBLIC_SALT, patient_id, "patient")
