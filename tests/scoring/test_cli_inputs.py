"""``medfusion score`` with paths that cannot be used, as a real process: one line naming the path and
the reason, exit status 1, and the inputs are checked before the model is touched, and before torch,
MONAI and MLflow are even imported (about 12 s of CPU a process here)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from .cli_process import cli_env, error_lines, run_cli

#: The imports a mistyped path must not wait for.
HEAVY_MODULES = ("torch", "monai", "mlflow", "transformers")


@dataclass(frozen=True)
class Paths:
    """A valid source, reports file and output folder, plus things to break them with."""

    src: Path
    reports: Path
    out: Path
    a_file: Path
    read_only: Path
    no_access: Path
    no_model: Path


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    (tmp_path / "src").mkdir()
    (tmp_path / "reports.ndjson").write_text("")
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "read_only").mkdir(mode=0o555)
    (tmp_path / "no_access").mkdir(mode=0o000)
    (tmp_path / "no_model").mkdir()  # no medfusion_model.json: resolving it fails at once
    return Paths(
        tmp_path / "src",
        tmp_path / "reports.ndjson",
        tmp_path / "out",
        tmp_path / "a_file",
        tmp_path / "read_only",
        tmp_path / "no_access",
        tmp_path / "no_model",
    )


def _unreadable_file(p: Paths) -> Path:
    p.reports.chmod(0o000)
    return p.reports


# (what to break, which argument: "src" | "reports" | "out", the bad path, the reason shown)
CASES: list[tuple[str, str, Callable[[Paths], Path], str]] = [
    ("out-is-a-file", "out", lambda p: p.a_file, "is a file, not a folder"),
    ("out-under-a-file", "out", lambda p: p.a_file / "out", "Not a directory"),
    ("out-read-only", "out", lambda p: p.read_only, "Permission denied"),
    ("out-parent-read-only", "out", lambda p: p.read_only / "out", "Permission denied"),
    ("out-in-proc", "out", lambda p: Path("/proc/medfusion-out"), "No such file or directory"),
    ("source-missing", "src", lambda p: p.src / "nowhere", "no such file or folder"),
    ("source-unreadable", "src", lambda p: p.no_access, "Permission denied"),
    ("source-is-a-file", "src", lambda p: p.a_file, "not a folder"),
    ("source-under-a-file", "src", lambda p: p.a_file / "dicom", "Not a directory"),
    ("reports-missing", "reports", lambda p: p.src / "reports.ndjson", "no such file or folder"),
    ("reports-unreadable", "reports", _unreadable_file, "Permission denied"),
    ("reports-folder-unreadable", "reports", lambda p: p.no_access, "Permission denied"),
    ("reports-under-a-file", "reports", lambda p: p.a_file / "r.ndjson", "Not a directory"),
]


def _args(p: Paths, broken: str, bad: Path) -> list[str | Path]:
    src, reports, out = (
        bad if broken == name else default for name, default in (("src", p.src), ("reports", p.reports), ("out", p.out))
    )
    return ["score", src, "--reports", reports, "--out", out, "--no-progress"]


@pytest.mark.parametrize(("broken", "bad_path", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_unusable_path_is_one_line_naming_it(
    paths: Paths, broken: str, bad_path: Callable[[Paths], Path], reason: str
) -> None:
    bad = bad_path(paths)
    result = run_cli([*_args(paths, broken, bad), "--model", paths.no_model], honour_file_modes=True)
    lines = error_lines(result)
    assert result.returncode == 1, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f"error: {bad}") and reason in lines[0], lines[0]
    assert "medfusion model folder" not in lines[0]  # the input error wins over the (bad) model
    if broken != "out":
        assert not paths.out.exists()  # nothing written for a job that cannot start


@pytest.mark.parametrize("broken", ["src", "reports", "out"])
def test_inputs_fail_before_the_model_store_is_contacted(paths: Paths, broken: str) -> None:
    """The default model (models:/medfusion@champion) lives in an MLflow server that does not answer:
    the input error comes first and at once, and nothing of a model reaches --out."""
    bad = {"src": paths.no_access, "reports": paths.src / "missing.ndjson", "out": paths.read_only / "out"}[broken]
    dead_store = "http://127.0.0.1:9"  # discard port: connection refused, MLflow would retry for minutes
    result = run_cli(_args(paths, broken, bad), honour_file_modes=True, MLFLOW_TRACKING_URI=dead_store)
    lines = error_lines(result)
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"error: {bad}"), result.stderr[-3000:]
    assert "127.0.0.1" not in result.stderr and "mlflow" not in result.stderr.lower()
    assert not paths.out.exists() and not (paths.read_only / "out").exists()


@pytest.mark.parametrize(
    ("broken", "bad_path"),
    [("src", lambda p: p.src / "nowhere"), ("reports", lambda p: p.a_file / "r.ndjson"), ("out", lambda p: p.a_file)],
    ids=["source", "reports", "out"],
)
def test_a_bad_path_is_answered_before_the_heavy_imports(
    paths: Paths, broken: str, bad_path: Callable[[Paths], Path]
) -> None:
    """The CLI in a fresh interpreter: after the one-line error, none of torch, MONAI, MLflow and
    transformers is loaded."""
    bad = bad_path(paths)
    args = [str(a) for a in _args(paths, broken, bad)]
    probe = (
        "import sys\n"
        "from medfusion.cli import app\n"
        "try:\n"
        "    app(sys.argv[1:], prog_name='medfusion')\n"
        "except SystemExit as exit:\n"
        f"    print('exit', exit.code, 'loaded', [m for m in {HEAVY_MODULES!r} if m in sys.modules])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, *args], capture_output=True, text=True, env=cli_env(), timeout=120, check=False
    )
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}"), result.stderr[-3000:]
    assert result.stdout.strip() == "exit 1 loaded []", result.stdout


@pytest.mark.slow  # a whole CLI process with the configuration loaded (MONAI's import: ~7 s of CPU)
def test_os_errors_of_other_commands_are_one_line_too(paths: Paths) -> None:
    """The mapping sits in the CLI, not in ``score``: ``demo-data`` into a path under a file."""
    bad = paths.a_file / "cohort"
    result = run_cli(["demo-data", "--out", bad, "--set", "data.demo.n_studies=8"])
    lines = error_lines(result)
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-3000:]
    assert str(paths.a_file) in lines[0] and "Not a directory" in lines[0] and "Traceback" not in result.stderr
