"""The ``medfusion`` command line. Thin: parses arguments and calls the library.

Errors medfusion raises on purpose (:class:`~medfusion.errors.MedfusionError`) and operating-system
errors (a path that is missing, not writable, a file where a folder should be, a full disk...) are
printed as one clear line naming the path and the reason, and exit with status 1 (``--verbose`` logs
the traceback too); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml

from medfusion.errors import ConfigError, MedfusionError

if TYPE_CHECKING:
    from medfusion.config import Config

app = typer.Typer(
    name="medfusion",
    help="Multimodal (DICOM + report) diagnosis assistant: data, training, tracking, scoring, review.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

#: The shipped demo config (package data, found from any folder; see medfusion.config.load_config).
DEFAULT_CONFIG = Path("demo")
# readable=False: a path that cannot be read is reported by the command itself, as one line (exit 1)
ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        help="YAML run configuration: a file, or a shipped config by name (demo, chest_xray).",
        readable=False,
    ),
]
ProjectDirOption = Annotated[
    Path | None,
    typer.Option(
        "--project-dir",
        help="Folder for this project's outputs (MLflow store, runs, cohort); default: the config's project_dir "
        "(shipped configs: ./runs/<name> under the current folder).",
        readable=False,
    ),
]
OverrideOption = Annotated[
    list[str] | None,
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
    # highdicom logs a line per module it copies into each SR
    for noisy in ("urllib3", "alembic", "matplotlib", "PIL", "filelock", "git", "highdicom"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from medfusion.privacy import install_log_redaction

    install_log_redaction()  # identifiers the readers saw become [PHI] in every log record


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


def _load(config: Path, overrides: list[str] | None, project_dir: Path | None = None) -> Config:
    from medfusion.config import load_config

    parsed = _parse_overrides(overrides)
    if project_dir is not None:
        parsed["project_dir"] = str(project_dir.absolute())
    return load_config(config, parsed)


def os_error_line(exc: OSError) -> str:
    """One line for an operating-system error: ``<path>: <reason>`` (both paths for a rename/copy)."""
    reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    if exc.filename is None:
        return reason
    paths = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
    return f"{paths}: {reason}"


def _friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (MedfusionError, OSError) as exc:
            logging.getLogger(__name__).debug("%s failed", func.__name__, exc_info=True)  # --verbose
            message = os_error_line(exc) if isinstance(exc, OSError) else str(exc)
            typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=1) from None

    return wrapper


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    """medfusion command line."""
    _setup_logging(verbose)


@app.command("validate-config")
@_friendly_errors
def validate_config(
    config: Annotated[
        Path, typer.Argument(help="YAML file to check, or a shipped config by name (demo, chest_xray).")
    ] = DEFAULT_CONFIG,
) -> None:
    """Validate a config file; print the resolved configuration."""
    from medfusion.config import load_config

    resolved = load_config(config)
    typer.echo(yaml.safe_dump(resolved.model_dump(mode="json"), sort_keys=False))


@app.command("convert-weights")
@_friendly_errors
def convert_weights(
    src: Annotated[Path, typer.Argument(help="torchvision / torchxrayvision state dict (.pt, .pth, .safetensors).")],
    layout: Annotated[str, typer.Option(help="Key layout of SRC: torchvision or xrv (torchxrayvision).")],
    out: Annotated[Path, typer.Option(help="Converted weights to write (.safetensors).", readable=False)],
    arch: Annotated[str, typer.Option(help="Encoder: densenet121, resnet18, resnet34, resnet50.")] = "densenet121",
    in_channels: Annotated[int, typer.Option(help="Input channels of the encoder (1: RGB filters summed).")] = 1,
) -> None:
    """Convert pretrained trunk weights to medfusion's MONAI layout (image_encoder.pretrained_path)."""
    from medfusion.models.convert import Layout, convert_file
    from medfusion.processing.spec import SOURCE_INTENSITY

    if layout not in ("torchvision", "xrv"):
        raise MedfusionError(f"--layout must be torchvision or xrv, got {layout!r}")
    source: Layout = "xrv" if layout == "xrv" else "torchvision"
    state = convert_file(src, out, layout=source, arch=arch, in_channels=in_channels)
    typer.echo(f"wrote {out}: {len(state)} tensors of MONAI {arch} ({in_channels} input channel(s))")
    typer.echo(
        f"train with image_encoder: {{name: {arch}, in_channels: {in_channels}, pretrained_path: {out}}} and "
        f"data: {{intensity: {SOURCE_INTENSITY[source]}}} (the normalisation the {layout} weights expect)"
    )


@app.command("demo-data")
@_friendly_errors
def demo_data(
    config: ConfigOption = DEFAULT_CONFIG,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: <project_dir>/demo_cohort).")] = None,
    overrides: OverrideOption = None,
) -> None:
    """Generate the seeded synthetic demo cohort (DICOM + FHIR reports + labels + manifest)."""
    from medfusion.datasets.demo.cohort import generate_demo_cohort

    cfg = _load(config, overrides)
    root = out or cfg.project_dir / "demo_cohort"
    result = generate_demo_cohort(root, cfg.data.demo, labels=cfg.labels)
    typer.echo(f"demo cohort: {result.n_studies} studies in manifest {result.manifest_path}")
    typer.echo(f"rejected inputs: {len(result.rejected)} (listed in {root / 'rejected.csv'})")


@app.command("import-images")
@_friendly_errors
def import_images_cmd(
    table: Annotated[
        Path,
        typer.Argument(
            help="CSV, one row per study: image (path, relative to the CSV or absolute), patient_id, study_id or "
            "accession_number; optional view, report, study_date; every other column is a label (1, 0, empty).",
            readable=False,
        ),
    ],
    out: Annotated[Path, typer.Option(help="Output folder: dicom/, reports.csv, labels.csv, rejected.csv.")],
    modality: Annotated[
        str, typer.Option(help="Modality written into the files (OT; CR or DX if your series rules select by it).")
    ] = "OT",
) -> None:
    """Convert PNG/JPEG images + a CSV table into DICOM, a reports file and a labels file for build-manifest.

    Rows that cannot be used (missing or unreadable image, too large, duplicate study id) are listed with
    the reason in OUT/rejected.csv; the rest are imported.
    """
    from medfusion.ingest.images_import import import_images

    try:
        result = import_images(table, out, modality=modality)
    except ValueError as exc:
        raise MedfusionError(f"--modality: {exc}") from None
    typer.echo(result.summary())


@app.command("build-manifest")
@_friendly_errors
def build_manifest_cmd(
    dicom: Annotated[Path, typer.Option(help="Folder tree of DICOM files (any layout).")],
    reports: Annotated[
        list[Path],
        typer.Option(
            help="Report source(s): FHIR JSON/NDJSON/Bundle, .txt, or CSV with columns report (text, required), "
            "accession_number and/or study_uid (link to the study), report_id (optional)."
        ),
    ],
    labels_csv: Annotated[
        Path,
        typer.Option(
            "--labels",
            help="CSV keyed by study_uid, accession_number, or patient_id + study_date, with one column per "
            "config label (1, 0 or empty = unknown).",
        ),
    ],
    out: Annotated[Path, typer.Option(help="Manifest to write (.parquet or .csv).")],
    config: ConfigOption = DEFAULT_CONFIG,
    overrides: OverrideOption = None,
) -> None:
    """Build a manifest from a raw archive: DICOM tree + reports + a label file.

    Report CSV columns: report (the text, required); accession_number and/or study_uid (link it to its study).

    Optional report CSV column: report_id (default row<N>). Accession numbers are pseudonymised as read.

    Label CSV: a study key (study_uid; or accession_number; or patient_id + study_date, YYYYMMDD or YYYY-MM-DD:
    compared as pseudonyms, never stored) + one column per label of the config (-c CONFIG, or
    --set "labels=\\[a, b]"). A key matching no study, or several, is rejected with its row.

    Both files' columns are checked before the DICOM folder is scanned.
    """
    from medfusion.ingest.archive import build_manifest
    from medfusion.ingest.label_file import KEY_COLUMNS, MissingLabelColumns
    from medfusion.ingest.manifest import format_split_sizes, split_sizes

    cfg = _load(config, overrides)
    try:
        build = build_manifest(
            dicom,
            reports,
            labels_csv,
            labels=cfg.labels,
            seed=cfg.training.seed,
            val_fraction=cfg.training.val_fraction,
            test_fraction=cfg.training.test_fraction,
            split=cfg.training.split,
            stratify=cfg.training.split_stratify,
            out=out,
        )
    except MissingLabelColumns as exc:
        origin = "--set labels" if "labels" in _parse_overrides(overrides) else f"the config {config}"
        keys = {c for cols in KEY_COLUMNS.values() for c in cols}
        yours = [c for c in exc.columns if c not in keys]
        raise MissingLabelColumns(
            exc.source,
            exc.missing,
            exc.labels,
            exc.columns,
            hint=f"the labels come from {origin}; to use your own, pass a config that lists them (-c my.yaml) "
            f'or --set "labels=[{", ".join(yours)}]"',
        ) from None
    typer.echo(f"manifest: {len(build.manifest)} studies -> {build.path}; rejected inputs: {len(build.rejected)}")
    typer.echo(f"splits ({cfg.training.split}): {format_split_sizes(split_sizes(build.manifest))}")


@app.command()
@_friendly_errors
def train(
    config: ConfigOption = DEFAULT_CONFIG,
    overrides: OverrideOption = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the newest killed run from its last epoch checkpoint.")
    ] = False,
    threads: Annotated[
        int | None,
        typer.Option("--threads", min=1, help="Torch threads for training (default: training.threads, 1)."),
    ] = None,
    register: Annotated[
        bool,
        typer.Option(
            "--register/--no-register", help="Register the model as @challenger (--no-register: only log it)."
        ),
    ] = True,
    nproc: Annotated[
        int,
        typer.Option(
            "--nproc",
            min=1,
            help="Train with N processes on this node (DistributedDataParallel; one per GPU on CUDA, gloo on "
            "CPU), started through torchrun; training.batch_size stays the global batch. Multi-node: "
            "docs/distributed.md.",
        ),
    ] = 1,
    project_dir: ProjectDirOption = None,
) -> None:
    """Train a model, tracked in MLflow, and register it as a challenger."""
    from medfusion.training import distributed
    from medfusion.workflow import train_and_register

    if nproc > 1 and not distributed.launched():
        raise typer.Exit(code=distributed.launch(nproc, _without_nproc(sys.argv[1:])))
    if distributed.launched() and int(os.environ.get("RANK", "0")) != 0:
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 tells the story
    sets = [*(overrides or []), *([f"training.threads={threads}"] if threads is not None else [])]
    try:
        outcome = train_and_register(_load(config, sets, project_dir), resume=resume, register=register)
    except BaseException as error:
        traceback.clear_frames(error.__traceback__)  # frees the DDP wrapper before its group (shutdown())
        distributed.shutdown()
        raise
    distributed.shutdown()
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(outcome.summary())


def _without_nproc(argv: list[str]) -> list[str]:
    """The command line without its ``--nproc N`` / ``--nproc=N`` (what each launched process runs)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


@app.command()
@_friendly_errors
def promote(
    config: ConfigOption = DEFAULT_CONFIG,
    version: Annotated[str | None, typer.Option(help="Model version to evaluate (default: @challenger).")] = None,
    overrides: OverrideOption = None,
    approved_by: Annotated[
        str | None,
        typer.Option(
            help="Who approved this promotion (tagged on the version; required if promotion.require_approval)."
        ),
    ] = None,
) -> None:
    """Evaluate the challenger against the champion and move @champion only if every gate passes."""
    from medfusion.tracking.promotion import promote_challenger

    decision = promote_challenger(_load(config, overrides), version=version, approved_by=approved_by)
    typer.echo(decision.summary())
    if not decision.promoted:
        raise typer.Exit(code=3)


@app.command()
@_friendly_errors
def demo(
    config: ConfigOption = DEFAULT_CONFIG, overrides: OverrideOption = None, project_dir: ProjectDirOption = None
) -> None:
    """End to end on embedded defaults: demo cohort -> train -> track -> promote -> next steps."""
    from medfusion.workflow import run_demo

    promoted, text = run_demo(_load(config, overrides, project_dir))
    typer.echo(text)
    if not promoted:
        raise typer.Exit(code=3)


@app.command()
@_friendly_errors
def score(
    source: Annotated[str, typer.Argument(help="Folder tree of DICOM files, or a DICOMweb URL (http(s)://...).")],
    out: Annotated[
        Path, typer.Option(help="Output folder: ledger, results/*.parquet, fhir/, summary.json.", readable=False)
    ],
    reports: Annotated[
        Path | None, typer.Option(help="Reports: FHIR NDJSON/Bundle/JSON, CSV, .txt or a folder.", readable=False)
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model folder or MLflow URI (default: models:/<registered_model>@champion).")
    ] = None,
    engine: Annotated[str, typer.Option(help="local (process pool) or ray (Ray Data).")] = "local",
    workers: Annotated[int, typer.Option(help="Decode/preprocess worker processes.")] = 2,
    batch_size: Annotated[int, typer.Option(help="Studies per forward pass.")] = 16,
    part_size: Annotated[int, typer.Option(help="Studies per results part (and ledger commit).")] = 256,
    fhir: Annotated[bool, typer.Option("--fhir", help="Also write FHIR DiagnosticReport/Observation NDJSON.")] = False,
    sr: Annotated[
        bool, typer.Option("--sr", help="Also write one DICOM SR (TID 1500) per scored study to OUT/sr/.")
    ] = False,
    sr_codes: Annotated[
        Path | None, typer.Option(help="Site code map for the SR findings (YAML/JSON; see docs/dicom_sr.md).")
    ] = None,
    stow: Annotated[
        str | None,
        typer.Option(help="Send each SR to this DICOMweb root (STOW-RS) when its part commits; needs --sr."),
    ] = None,
    device: Annotated[str, typer.Option(help="Inference device: auto, cpu, cuda.")] = "auto",
    amp: Annotated[
        str,
        typer.Option(help="Inference precision: auto (bf16 on a GPU with it, else fp16; off on CPU), bf16, fp16, off."),
    ] = "auto",
    max_attempts: Annotated[int, typer.Option(help="Worker crashes on one study before it is dead-lettered.")] = 2,
    file_timeout: Annotated[
        float, typer.Option(help="Longest time spent on one file (header read, decode step), seconds; 0: no bound.")
    ] = 60.0,
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster address (auto, ray://host:10001); default local.")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    config: ConfigOption = DEFAULT_CONFIG,
    overrides: OverrideOption = None,
    project_dir: ProjectDirOption = None,
) -> None:
    """Batch-score an archive (folder tree or DICOMweb) with a registered model; resumable (re-run to resume)."""
    from medfusion.processes import retain_freed_memory
    from medfusion.scoring.inputs import check_job_inputs

    check_job_inputs(source, reports, out)  # a mistyped path is answered before torch, MONAI and MLflow load
    cfg = _load(config, overrides, project_dir)

    from medfusion.scoring.job import ScoreOptions, run_score
    from medfusion.tracking.store import tracking_uri

    retain_freed_memory()  # this process runs the batches' forward passes: as the workers (medfusion.processes)
    summary = run_score(
        ScoreOptions(
            source=source,
            out_dir=out,
            model=model or f"models:/{cfg.tracking.registered_model}@champion",
            reports=reports,
            engine=engine,
            workers=workers,
            batch_size=batch_size,
            part_size=part_size,
            fhir=fhir,
            sr=sr,
            sr_codes=sr_codes,
            stow=stow,
            device=device,
            amp=amp,
            max_attempts=max_attempts,
            file_timeout_s=file_timeout or None,
            tracking_uri=tracking_uri(cfg),
            progress=progress,
            ray_address=ray_address,
        )
    )
    typer.echo(summary.text())
    typer.echo(f"results: {out / 'results'}; summary: {out / 'summary.json'}")


review_app = typer.Typer(help="Radiologist review dashboard (Streamlit) and its users and exports.")
app.add_typer(review_app, name="review")
UsersOption = Annotated[
    Path | None, typer.Option("--users", help="Users file (default: beside the results, review_users.yaml).")
]


@review_app.callback(invoke_without_command=True)
@_friendly_errors
def review(
    ctx: typer.Context,
    config: ConfigOption = DEFAULT_CONFIG,
    results: Annotated[
        Path | None, typer.Option(help="Scoring output folder (default: <project_dir>/review/scores, scored if empty).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model for explanations (default: the version that scored).")
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            help="Review store: a sqlite file (default: <results>/review.sqlite) or a postgresql:// URL shared by"
            " several app servers (password from PGPASSWORD or ~/.pgpass rather than the URL)."
        ),
    ] = None,
    users: UsersOption = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8501,
    trusted_header: Annotated[
        str | None, typer.Option(help="Trust this upstream auth header (e.g. X-Forwarded-User) behind a reverse proxy.")
    ] = None,
    organization: Annotated[
        str | None, typer.Option(help="Your organization, signed as verifier on VERIFIED DICOM SRs.")
    ] = None,
    stow: Annotated[
        str | None, typer.Option(help="Send VERIFIED DICOM SRs to this PACS (DICOMweb root, STOW-RS).")
    ] = None,
    viewer_url_template: Annotated[
        str | None,
        typer.Option(
            "--viewer-url-template",
            envvar="MEDFUSION_REVIEW_VIEWER_URL",
            help="'Open in PACS viewer' link, e.g. 'https://pacs/ohif/viewer?StudyInstanceUIDs={study_uid}'.",
        ),
    ] = None,
    oidc_roles: Annotated[
        str | None,
        typer.Option(
            "--oidc-roles",
            envvar="MEDFUSION_REVIEW_OIDC_ROLES",
            help="Hospital login (st.login, [auth] in .streamlit/secrets.toml): claim value -> role, "
            "'value=role[+identifiers],...' with role admin | reviewer | viewer.",
        ),
    ] = None,
    oidc_role_claim: Annotated[
        str | None,
        typer.Option(
            "--oidc-role-claim", envvar="MEDFUSION_REVIEW_OIDC_ROLE_CLAIM", help="Identity-token claim (default roles)."
        ),
    ] = None,
    oidc_provider: Annotated[
        str | None,
        typer.Option(
            "--oidc-provider",
            envvar="MEDFUSION_REVIEW_OIDC_PROVIDER",
            help="Provider name ([auth.<name>]); default: the provider in [auth] itself.",
        ),
    ] = None,
    overrides: OverrideOption = None,
    project_dir: ProjectDirOption = None,
) -> None:
    """Start the review dashboard on 127.0.0.1 (scores the demo test split first if needed)."""
    if ctx.invoked_subcommand is not None:
        return
    from medfusion.review import launch
    from medfusion.review.settings import ReviewSettings
    from medfusion.tracking.store import tracking_uri

    cfg = _load(config, overrides, project_dir)
    uri = tracking_uri(cfg)
    results_dir = results or launch.default_results_dir(cfg)
    if not launch.has_scores(results_dir):
        if results is not None:
            raise MedfusionError(
                f"{results_dir}: no scoring output here (run 'medfusion score ... --out {results_dir}')"
            )
        typer.echo(f"no scores yet: scoring the demo cohort's test split into {results_dir} ...")
        typer.echo(launch.score_demo_test_split(cfg, results_dir, model or launch.default_model_uri(cfg), uri))
    settings = ReviewSettings.create(
        results_dir,
        model_uri=model,
        store_path=store,
        users_path=users,
        tracking_uri=uri,
        trusted_header=trusted_header,
        organization=organization,
        stow_url=stow,
        viewer_url_template=viewer_url_template,
        oidc_provider=oidc_provider,
        oidc_role_claim=oidc_role_claim,
        oidc_roles=oidc_roles,
    )
    from medfusion.review.store import ReviewStore

    ReviewStore(settings.store_location)  # fail here, not in the browser, when the store cannot be used
    first = launch.ensure_users(settings.users_path)
    if first is not None:
        typer.secho(
            f"created {settings.users_path} with user '{first.name}', password: {first.password}\n"
            "  (shown once; add users with 'medfusion review add-user NAME')",
            fg=typer.colors.YELLOW,
        )
    typer.echo(f"review store: {settings.store_label}")
    typer.echo(f"review app: open http://127.0.0.1:{port} in a browser (Ctrl+C stops it)")
    raise typer.Exit(code=launch.run_app(settings, port))


@review_app.command("add-user")
@_friendly_errors
def review_add_user(
    name: Annotated[str, typer.Argument(help="Login name.")],
    users: Annotated[Path, typer.Option("--users", help="Users file to create or update.")],
    role: Annotated[
        str, typer.Option(help="admin (reviewer + admin page), reviewer (decides, exports) or viewer (reads only).")
    ] = "reviewer",
    display_name: Annotated[
        str | None,
        typer.Option(help="Name signed on verified DICOM SRs sent to the PACS (e.g. 'Smith^Alice'); default: login."),
    ] = None,
    identifiers: Annotated[
        bool, typer.Option("--identifiers", help="Show this user accession, study date, age and sex (display only).")
    ] = False,
) -> None:
    """Add or replace a review user (prompts for the password; stores a salted scrypt hash)."""
    from medfusion.review.auth import add_user

    password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    add_user(users, name, password, role=role, display_name=display_name, identifiers=identifiers)  # type: ignore[arg-type]
    typer.echo(f"{users}: user '{name}' ({role}) saved")


@review_app.command("hash-password")
def review_hash_password() -> None:
    """Print a salted scrypt hash of a password (prompted), for a users file's 'password:' field."""
    from medfusion.review.auth import hash_password

    typer.echo(hash_password(typer.prompt("Password", hide_input=True, confirmation_prompt=True)))


@review_app.command("export")
@_friendly_errors
def review_export(
    results: Annotated[Path, typer.Option(help="Scoring output folder (for the label names).")],
    out: Annotated[Path, typer.Option(help="Folder to write reviewed_labels.csv and reviewed_labels.ndjson.")],
    store: Annotated[
        str | None,
        typer.Option(help="Review store: a sqlite file (default: <results>/review.sqlite) or a postgresql:// URL."),
    ] = None,
    include_comments: Annotated[
        bool,
        typer.Option("--include-comments", help="Also export reviewers' free-text comments (left out by default)."),
    ] = False,
) -> None:
    """Export reviewed labels (CSV for build-manifest --labels, FHIR R5 NDJSON) for retraining.

    Comments are left out unless asked for.
    """
    from medfusion.results import labels_of
    from medfusion.review.data import read_scores
    from medfusion.review.export import export_csv, export_fhir
    from medfusion.review.settings import ReviewSettings
    from medfusion.review.store import ReviewStore

    settings = ReviewSettings.create(results, store_path=store)
    review_store = ReviewStore(settings.store_location)
    labels = labels_of(read_scores(results))
    csv = export_csv(review_store, labels, out / "reviewed_labels.csv", include_comments=include_comments)
    ndjson = export_fhir(review_store, out / "reviewed_labels.ndjson", include_comments=include_comments)
    typer.echo(f"wrote {csv} and {ndjson}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
