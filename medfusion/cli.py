"""The ``medfusion`` command line. Thin: parses arguments and calls the library.

Errors medfusion raises on purpose (:class:`~medfusion.errors.MedfusionError`) are printed as one
clear line and exit with status 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
import yaml

from medfusion.errors import ConfigError, MedfusionError

app = typer.Typer(
    name="medfusion",
    help="Multimodal (DICOM + report) diagnosis assistant: data, training, tracking, scoring, review.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

DEFAULT_CONFIG = Path("configs/demo.yaml")
ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="YAML run configuration.")]
OverrideOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="Override a config key, e.g. --set fusion.name=late (repeatable)."),
]


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, rich_tracebacks=False)],
        force=True,
    )
    for noisy in ("urllib3", "alembic", "matplotlib", "PIL", "filelock", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into ``{"a": {"b": 1}, "c": "x"}`` (values parsed as YAML)."""
    overrides: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. fusion.name=late")
        key, value = item.split("=", 1)
        node = overrides
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return overrides


def _load(config: Path, overrides: list[str] | None):
    from medfusion.config import load_config

    return load_config(config, _parse_overrides(overrides))


def _friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MedfusionError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=1) from None

    return wrapper


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    """medfusion command line."""
    _setup_logging(verbose)


@app.command("validate-config")
@_friendly_errors
def validate_config(config: Annotated[Path, typer.Argument(help="YAML file to check.")]) -> None:
    """Validate a config file; print the resolved configuration."""
    from medfusion.config import load_config

    resolved = load_config(config)
    typer.echo(yaml.safe_dump(resolved.model_dump(mode="json"), sort_keys=False))


@app.command("demo-data")
@_friendly_errors
def demo_data(
    config: ConfigOption = DEFAULT_CONFIG,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default: <project_dir>/demo_cohort).")] = None,
    overrides: OverrideOption = None,
) -> None:
    """Generate the seeded synthetic demo cohort (DICOM + FHIR reports + labels + manifest)."""
    from medfusion.data.demo_cohort import generate_demo_cohort

    cfg = _load(config, overrides)
    root = out or cfg.project_dir / "demo_cohort"
    result = generate_demo_cohort(root, cfg.data.demo, labels=cfg.labels)
    typer.echo(f"demo cohort: {result.n_studies} studies in manifest {result.manifest_path}")
    typer.echo(f"rejected inputs: {len(result.rejected)} (listed in {root / 'rejected.csv'})")


@app.command("build-manifest")
@_friendly_errors
def build_manifest_cmd(
    dicom: Annotated[Path, typer.Option(help="Folder tree of DICOM files (any layout).")],
    reports: Annotated[list[Path], typer.Option(help="Report source(s): FHIR JSON/NDJSON/Bundle, CSV or .txt.")],
    labels_csv: Annotated[Path, typer.Option("--labels", help="CSV with study_uid and one column per label.")],
    out: Annotated[Path, typer.Option(help="Manifest to write (.parquet or .csv).")],
    config: ConfigOption = DEFAULT_CONFIG,
    overrides: OverrideOption = None,
) -> None:
    """Build a manifest from a raw archive: DICOM tree + reports + a label file."""
    from medfusion.data.cohort import build_manifest

    cfg = _load(config, overrides)
    build = build_manifest(
        dicom,
        reports,
        labels_csv,
        labels=cfg.labels,
        seed=cfg.training.seed,
        val_fraction=cfg.training.val_fraction,
        test_fraction=cfg.training.test_fraction,
        out=out,
    )
    typer.echo(f"manifest: {len(build.manifest)} studies -> {build.path}; rejected inputs: {len(build.rejected)}")


@app.command()
@_friendly_errors
def train(config: ConfigOption = DEFAULT_CONFIG, overrides: OverrideOption = None) -> None:
    """Train a model, tracked in MLflow, and register it as a challenger."""
    from medfusion.workflow import train_and_register

    outcome = train_and_register(_load(config, overrides))
    typer.echo(outcome.summary())


@app.command()
@_friendly_errors
def promote(
    config: ConfigOption = DEFAULT_CONFIG,
    version: Annotated[Optional[str], typer.Option(help="Model version to evaluate (default: @challenger).")] = None,
    overrides: OverrideOption = None,
) -> None:
    """Evaluate the challenger against the champion and move @champion only if every gate passes."""
    from medfusion.tracking.promotion import promote_challenger

    decision = promote_challenger(_load(config, overrides), version=version)
    typer.echo(decision.summary())
    if not decision.promoted:
        raise typer.Exit(code=3)


@app.command()
@_friendly_errors
def demo(config: ConfigOption = DEFAULT_CONFIG, overrides: OverrideOption = None) -> None:
    """End to end on embedded defaults: demo cohort -> train -> track -> promote -> next steps."""
    from medfusion.workflow import run_demo

    promoted, text = run_demo(_load(config, overrides))
    typer.echo(text)
    if not promoted:
        raise typer.Exit(code=3)


def _not_yet(what: str, issue: int) -> None:
    typer.secho(f"'medfusion {what}' is not available in this version yet (tracked in issue #{issue}).", err=True)
    raise typer.Exit(code=2)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def score() -> None:
    """Batch-score an archive (folder tree or DICOMweb) with a registered model."""
    _not_yet("score", 5)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def review() -> None:
    """Start the radiologist review dashboard."""
    _not_yet("review", 6)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
