"""``medfusion review``: prepare the embedded defaults and run the Streamlit app headless on loopback.

On the shipped demo config (``-c demo``, the default): results default to ``<project_dir>/review/scores``;
when that folder holds no scoring output, the demo cohort's test split is scored first with the
``@champion`` model; when the users file is missing, a ``reviewer`` user is created with a
generated password that is printed once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from medfusion.config import Config
from medfusion.errors import MedfusionError
from medfusion.review.auth import add_user, generate_password
from medfusion.review.settings import ReviewSettings

#: The Streamlit page, package data of ``medfusion.review`` (``apps/review/app.py`` in a checkout runs it).
APP_PATH = Path(str(resources.files("medfusion.review").joinpath("app", "page.py")))
FIRST_USER = "reviewer"


@dataclass(frozen=True)
class FirstUser:
    """A user created because no users file existed (its password is shown once)."""

    name: str
    password: str


def default_results_dir(config: Config) -> Path:
    """Where ``medfusion review`` keeps the scores it makes for the demo: ``<project_dir>/review/scores``."""
    return config.project_dir / "review" / "scores"


def default_model_uri(config: Config) -> str:
    """``models:/<registered model>@champion``."""
    return f"models:/{config.tracking.registered_model}@champion"


def has_scores(results_dir: Path) -> bool:
    """Whether a folder holds a scoring output with at least one scored study."""
    return (results_dir / "ledger.sqlite").is_file() and any((results_dir / "results").glob("part-*.parquet"))


def link_split(manifest_path: Path, labels: list[str], split: str, folder: Path) -> int:
    """Symlink the DICOM files of one manifest split into ``folder`` (a scoring source); returns the count."""
    from medfusion.ingest.manifest import read_manifest

    manifest = read_manifest(manifest_path, labels)
    rows = manifest[manifest["split"] == split]
    if rows.empty:
        raise MedfusionError(f"{manifest_path}: no study in split {split!r}")
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for i, paths in enumerate(rows["image_paths"]):
        for j, path in enumerate(paths):
            link = folder / f"{i:05d}_{j:02d}.dcm"
            if not link.exists():
                link.symlink_to(Path(path).resolve())
            n += 1
    return n


def score_demo_test_split(config: Config, results_dir: Path, model_uri: str, tracking_uri: str) -> str:
    """Score the demo cohort's test split into ``results_dir`` with the scoring job (with DICOM SRs, which
    the app can verify); returns its summary.

    Raises:
        MedfusionError: The demo cohort or the model is missing (run ``medfusion demo`` first).
    """
    from medfusion.scoring.job import ScoreOptions, run_score

    cohort = config.project_dir / "demo_cohort"
    manifest = config.data.manifest or cohort / "manifest.parquet"
    if not Path(manifest).is_file():
        raise MedfusionError(f"{manifest}: no demo cohort yet; run 'medfusion demo' first (it trains the @champion)")
    source = results_dir.parent / "test_split"
    link_split(Path(manifest), list(config.labels), "test", source)
    reports = cohort / "reports"
    summary = run_score(
        ScoreOptions(
            source=str(source),
            out_dir=results_dir,
            model=model_uri,
            reports=reports if reports.is_dir() else None,
            workers=1,
            tracking_uri=tracking_uri,
            progress=True,
            sr=True,  # the reviewer can verify the model's SR of a study
        )
    )
    return summary.text()


def ensure_users(users_path: Path) -> FirstUser | None:
    """Create the users file with one ``reviewer`` user when it does not exist."""
    if users_path.exists():
        return None
    password = generate_password()
    add_user(users_path, FIRST_USER, password, role="reviewer")
    return FirstUser(FIRST_USER, password)


def streamlit_command(port: int, address: str = "127.0.0.1", app_path: Path = APP_PATH) -> list[str]:
    """The ``streamlit run`` command line: headless, no usage stats, dark theme, no file watcher.

    ``runner.postScriptGC`` is off: Streamlit otherwise runs a full ``gc.collect(2)`` after every
    script run, stopped ones included, which with torch, MONAI and transformers loaded holds the
    GIL for seconds (about 3 s here) and freezes every session and the health endpoint; rapid
    clicking then queues dozens of them. Python's own generational collection still runs.
    """
    if not app_path.is_file():
        raise MedfusionError(f"{app_path}: review app not found (a broken medfusion install?)")
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app_path),
        "--server.headless=true",
        f"--server.address={address}",
        f"--server.port={port}",
        "--server.fileWatcherType=none",
        "--runner.postScriptGC=false",
        "--browser.gatherUsageStats=false",
        "--client.toolbarMode=minimal",
        "--theme.base=dark",
    ]


def run_app(settings: ReviewSettings, port: int, address: str = "127.0.0.1") -> int:
    """Run the app in the foreground until interrupted (Ctrl+C or SIGTERM stop Streamlit too)."""
    import signal

    env = {**os.environ, **settings.to_env()}
    proc = subprocess.Popen(streamlit_command(port, address), env=env)
    previous = signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
