"""Run configuration: YAML files validated by pydantic models.

Every model forbids unknown keys, so a typo fails loudly. :func:`load_config` turns validation
failures into a :class:`~medfusion.errors.ConfigError` naming the file and each offending key.
The shipped configs (``demo``, ``chest_xray``) are package data (``medfusion/configs/*.yaml``) and are
loaded by name: ``load_config("demo")``. Relative paths in a shipped config (``project_dir``,
``data.manifest``...) resolve against the current working directory, never inside the installed
package; relative paths in any other config file resolve against its folder (the parent of a folder
named ``configs``), so such commands work from any working directory.
"""

from __future__ import annotations

import reprlib
import types
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from medfusion.errors import ConfigError
from medfusion.ingest.dicom.selection import SeriesRuleSet

#: Mixed-precision settings (what each gives: :mod:`medfusion.precision`).
AmpMode = Literal["auto", "bf16", "fp16", "off"]

#: The shipped configs' package (``medfusion/configs/<name>.yaml``).
SHIPPED_PACKAGE = "medfusion"
SHIPPED_FOLDER = "configs"

#: The choice a YAML ``false`` / ``off`` / ``no`` means in an enum-like string field, in order of preference.
_OFF_CHOICES = ("off", "none")


@dataclass(frozen=True)
class YamlOn:
    """Field metadata: the choice a YAML ``true`` / ``on`` / ``yes`` means in an enum-like string field.

    YAML 1.1 reads an unquoted ``on``/``off``/``yes``/``no`` as a boolean, so ``amp: off`` arrives as
    ``False``. Every ``Literal`` string field maps ``False`` to its ``"off"`` (or ``"none"``) choice;
    ``True`` maps to ``"on"`` if that is a choice, else to the choice named here.
    """

    choice: str


@dataclass(frozen=True)
class Exclusive:
    """Keys of one config section of which at most one may be set (exactly one if ``required``).

    A key counts as set when its value differs from the field's default. Overrides (``--set``) that set
    one key of a group clear the others (:func:`merge_overrides`), so switching is one ``--set``.

    Attributes:
        keys: The mutually exclusive keys.
        required: One of them must be set.
        message: The validation error (default: names the keys).
    """

    keys: tuple[str, ...]
    required: bool = False
    message: str | None = None

    def error(self) -> str:
        """The validation message."""
        names = " and ".join(repr(k) for k in self.keys)
        return self.message or (f"set exactly one of {names}" if self.required else f"set at most one of {names}")


def _string_choices(annotation: object) -> tuple[str, ...]:
    """The choices of a ``Literal`` of strings (``Optional`` unwrapped), else ``()``."""
    if typing.get_origin(annotation) is Literal:
        args = typing.get_args(annotation)
        return args if all(isinstance(a, str) for a in args) else ()
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return next((c for a in typing.get_args(annotation) if (c := _string_choices(a))), ())
    return ()


class _Strict(BaseModel):
    """Base of every config section: unknown keys fail, YAML booleans mean on/off, exclusive keys are checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Groups of mutually exclusive keys of this section.
    exclusive_keys: ClassVar[tuple[Exclusive, ...]] = ()

    @field_validator("*", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: Any, info: ValidationInfo) -> Any:
        """``False``/``True`` (YAML ``off``/``on``, ``no``/``yes``) in an enum-like field: its off/on choice."""
        if not isinstance(value, bool) or info.field_name is None:
            return value
        field = cls.model_fields[info.field_name]
        choices = _string_choices(field.annotation)
        if not choices:
            return value
        if value is False:
            return next((c for c in _OFF_CHOICES if c in choices), value)
        if "on" in choices:
            return "on"
        return next((m.choice for m in field.metadata if isinstance(m, YamlOn)), value)

    @model_validator(mode="after")
    def _exclusive(self) -> _Strict:
        for group in self.exclusive_keys:
            chosen = [k for k in group.keys if getattr(self, k) != type(self).model_fields[k].get_default()]
            if len(chosen) > 1 or (group.required and not chosen):
                raise ValueError(group.error())
        return self


def _registered(name: str, known: list[str], kind: str) -> str:
    """``name`` if the registry knows it (see :mod:`medfusion.models.registry`), else a ValueError listing the known."""
    if name not in known:
        raise ValueError(f"unknown {kind} {name!r}; registered: {', '.join(known)}")
    return name


class DemoCohortConfig(_Strict):
    """Settings of the generated demo cohort (``medfusion demo-data``)."""

    n_studies: int = Field(240, ge=8, description="Number of studies to generate.")
    image_size: int = Field(128, ge=32, le=2048, description="Side of the square radiographs, pixels.")
    seed: int = 0
    broken_files: int = Field(3, ge=0, description="Deliberately broken DICOM files to add.")
    # Knobs that build cohorts to break fusion (defaults: today's cohort, byte for byte).
    image_signal: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Chance that a study's image shows its findings (nodule, cardiomegaly, consolidation patch); "
        "0: images are pure noise for every label.",
    )
    text_signal: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Chance that a study's report states its findings (effusion, fracture, infectious context); "
        "0: reports without finding words, pure noise for every label.",
    )
    image_findings: list[Literal["nodule", "cardiomegaly", "pneumonia"]] | None = Field(
        None, description="Image cues drawn at all (pneumonia: the patch); None: all. The others are never drawn."
    )
    text_findings: list[Literal["effusion", "fracture", "pneumonia"]] | None = Field(
        None, description="Report findings written at all (pneumonia: the context); None: all."
    )
    prevalence: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="Positive fraction of every label (pneumonia included); None: the cohort's own (0.3-0.35, 0.25).",
    )


class DataConfig(_Strict):
    """Where the studies come from and how they are preprocessed."""

    source: Literal["manifest", "demo"] = Field(
        "manifest",
        description="What training reads: 'manifest' (data.manifest, required to train) or 'demo' (the synthetic "
        "demo cohort, generated under project_dir). Never the demo by default.",
    )
    manifest: Path | None = Field(
        None, description="Manifest (CSV or Parquet); required to train unless source is demo."
    )
    demo: DemoCohortConfig = DemoCohortConfig()
    image_size: tuple[int, int] = (128, 128)
    frame_policy: Literal["first", "middle", "mean"] = "middle"
    max_tokens: int = Field(64, ge=8, le=512)
    report_sections: list[Literal["findings", "impression", "history", "full"]] = ["full"]
    num_workers: int = Field(
        0,
        ge=0,
        description="DataLoader worker processes per training process (0: load in the training process). On a GPU "
        "node use several (4-8 per GPU) so decoding and augmentation overlap the model; on a shared 2-core "
        "machine 0 is fastest. Workers are persistent; batches are pinned in memory on CUDA.",
    )
    prefetch_factor: int = Field(
        2, ge=1, description="Batches each DataLoader worker prepares ahead (with num_workers > 0)."
    )
    max_pixels: int = Field(
        64_000_000, ge=1, description="Images with more pixels (rows*cols*frames) are refused before decoding."
    )
    cache_dir: Path | None = Field(
        None,
        description="Keep decoded training images on disk here, keyed by file content and preprocessing, so later "
        "runs (and memory) do not pay for decoding again; None: decode once per run, in memory.",
    )
    series_rules: SeriesRuleSet = Field(
        SeriesRuleSet(),
        description="Which of a study's images the model reads: ordered rules on the headers (modality, body_part, "
        "view_position, image_type original/derived, laterality, min_rows/min_columns), first match wins; a study "
        "no rule matches is rejected ('no series matched rule set NAME'). Default: frontal views first, then any.",
    )
    intensity: Literal["auto", "zscore", "imagenet", "xrv"] = Field(
        "auto",
        description="Image normalisation: zscore (per image), imagenet (mean/std), xrv ([-1024, 1024]); auto: the "
        "one image_encoder.pretrained_layout's weights were trained with (zscore for monai). Set it for files "
        "converted by 'medfusion convert-weights' (their metadata names it).",
    )

    exclusive_keys = (
        Exclusive(
            ("source", "manifest"),
            message="data.source is 'demo' but data.manifest is set: remove one (source: manifest uses it)",
        ),
    )


class ImageEncoderConfig(_Strict):
    """MONAI image encoder."""

    name: str = Field("densenet121", description="A registered image encoder (medfusion.models.registry).")
    spatial_dims: Literal[2, 3] = 2
    in_channels: int = 1
    embed_dim: int = Field(64, ge=4, description="Projected embedding width fed to fusion.")
    pretrained_path: Path | None = Field(None, description="Local weights (.safetensors preferred, or .pt).")
    pretrained_layout: Literal["monai", "torchvision", "xrv"] = Field(
        "monai",
        description="Key layout of pretrained_path: monai (the MONAI network's), torchvision or xrv "
        "(torchxrayvision) state dicts, mapped at load time (medfusion.models.convert).",
    )
    # ViT only
    patch_size: int = 16
    vit_hidden: int = 96
    vit_layers: int = 2
    vit_heads: int = 4

    @field_validator("name")
    @classmethod
    def _known_encoder(cls, name: str) -> str:
        from medfusion.models.registry import image_encoder_names

        return _registered(name, image_encoder_names(), "image encoder")

    @model_validator(mode="after")
    def _layout_is_2d_cnn(self) -> ImageEncoderConfig:
        if self.pretrained_layout != "monai" and (self.spatial_dims != 2 or self.name == "vit"):
            raise ValueError(
                f"pretrained_layout {self.pretrained_layout!r} holds 2D CNN weights; it cannot load into "
                f"{self.name} with spatial_dims={self.spatial_dims}"
            )
        return self


class TinyBertConfig(_Strict):
    """A from-scratch BERT whose WordPiece vocabulary is trained on the cohort's reports (offline)."""

    hidden_size: int = 32
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 64
    vocab_size: int = 2000
    min_word_reports: int = Field(
        1,
        ge=1,
        description="Words found in fewer train reports stay out of the vocabulary (saved with the model and "
        "logged to MLflow). Use 5 or more on real reports so that names and other rare identifiers are never saved.",
    )


class TextEncoderConfig(_Strict):
    """Hugging Face BERT-family text encoder: a local path, a hub id, or a tiny from-scratch model."""

    name_or_path: str | None = Field(
        None, description="Local folder or hub id (e.g. microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract)."
    )
    tiny: TinyBertConfig | None = None
    embed_dim: int = Field(64, ge=4)
    pooling: Literal["cls", "mean"] = "cls"
    freeze: bool = False

    exclusive_keys = (Exclusive(("name_or_path", "tiny"), required=True),)


class FusionConfig(_Strict):
    """Fusion strategy and its sizes."""

    name: str = Field("hybrid", description="A registered fusion (medfusion.models.registry).")
    hidden_dim: int = Field(64, ge=4)
    num_heads: int = Field(4, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    modality_dropout: float = Field(
        0.1, ge=0.0, lt=1.0, description="Training-time chance of hiding one modality, so inference copes."
    )
    cross_attention: Literal["text_to_image", "bidirectional"] = Field(
        "bidirectional", description="hybrid only: text tokens attend to image tokens, or both ways."
    )
    aux_loss_weight: float = Field(
        0.5,
        ge=0.0,
        description="Weight of each modality head's own loss (late, gated, hybrid), on samples that have it.",
    )
    stacking: bool = Field(
        True,
        description="late, gated, hybrid: after training, fit per-label weights over (fused, image-only, text-only) "
        "logits on validation (medfusion.models.stacking), so the model can fall back to one modality; early "
        "stopping then follows the best of them. Needs aux_loss_weight > 0 (the modality heads' own training).",
    )
    stacking_prior: float = Field(
        0.01,
        ge=0.0,
        description="Validation cross-entropy a full weight moved off the fused head must buy; a blend must "
        "moreover beat every simpler combination by more than one standard error (medfusion.models.stacking).",
    )

    @field_validator("name")
    @classmethod
    def _known_fusion(cls, name: str) -> str:
        from medfusion.models.registry import fusion_names

        return _registered(name, fusion_names(), "fusion")


class TrainingConfig(_Strict):
    """Optimisation settings."""

    epochs: int = Field(8, ge=1)
    batch_size: int = Field(16, ge=1)
    grad_accum_steps: int = Field(1, ge=1)
    lr: float = Field(1e-3, gt=0)
    text_lr: float | None = Field(None, gt=0, description="Learning rate of a pretrained text encoder.")
    weight_decay: float = Field(0.01, ge=0)
    warmup_fraction: float = Field(0.1, ge=0, lt=1)
    amp: Annotated[AmpMode, YamlOn("auto")] = Field(
        "auto", description="Mixed precision; YAML on/off (booleans) mean auto/off."
    )
    device: str = "auto"
    threads: int = Field(
        1,
        ge=1,
        description="Torch intra-op threads of the training process (train --threads). 1 by default: on a "
        "shared, busy 2-core machine one thread trained small models 4-7x faster than two (README, Configuration).",
    )
    early_stopping_patience: int = Field(4, ge=1)
    pos_weight: Annotated[Literal["auto", "none"], YamlOn("auto")] = "auto"
    seed: int = 0
    val_fraction: float = Field(0.2, gt=0, lt=1, description="Fraction of patients in val (build-manifest).")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="Fraction of patients in test (build-manifest).")
    split: Literal["hash", "exact"] = Field(
        "hash",
        description="How build-manifest assigns patients to splits: 'hash' (each patient by a seeded hash: stable "
        "when patients are added, sizes right only on average) or 'exact' (seeded shuffle: sizes within one "
        "patient of the fractions; for small or complete cohorts).",
    )
    split_stratify: bool = Field(
        False, description="With split 'exact': spread each label's positive patients over the splits in proportion."
    )

    @model_validator(mode="after")
    def _stratify_needs_exact(self) -> TrainingConfig:
        if self.split_stratify and self.split != "exact":
            raise ValueError("split_stratify needs split: exact (the hash split assigns each patient alone)")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be below 1 (train needs patients)")
        return self


class TrackingConfig(_Strict):
    """MLflow settings. ``MLFLOW_TRACKING_URI`` in the environment overrides ``tracking_uri``."""

    tracking_uri: str | None = Field(None, description="Default: sqlite store under project_dir.")
    experiment: str = "medfusion"
    registered_model: str = "medfusion"


class PromotionGates(_Strict):
    """Gates a challenger must pass to become champion."""

    auroc_margin: float = Field(0.01, ge=0, description="Challenger macro AUROC >= champion's minus this.")
    max_ece: float = Field(0.15, gt=0)
    max_label_auroc_drop: float = Field(0.05, ge=0)
    max_latency_ms: float = Field(2000.0, gt=0, description="Per-study latency bound (p95).")
    require_approval: bool = Field(
        False, description="Refuse promotion unless a named person approved it (medfusion promote --approved-by NAME)."
    )
    require_ci_gain: bool = Field(
        False,
        description="Also require the lower bound of the 95 % CI of the macro AUROC gain over the champion "
        "(paired patient-level bootstrap on the frozen evaluation set) to be > 0: a challenger must be "
        "measurably better, not just within the margin.",
    )
    ci_resamples: int = Field(1000, ge=100, description="Bootstrap resamples of the require_ci_gain interval.")


class Config(_Strict):
    """A whole run."""

    name: str = "medfusion"
    project_dir: Path = Path("runs/demo")
    labels: list[str] = Field(min_length=1)
    data: DataConfig = DataConfig()
    image_encoder: ImageEncoderConfig = ImageEncoderConfig()
    text_encoder: TextEncoderConfig = TextEncoderConfig(tiny=TinyBertConfig())
    fusion: FusionConfig = FusionConfig()
    training: TrainingConfig = TrainingConfig()
    tracking: TrackingConfig = TrackingConfig()
    promotion: PromotionGates = PromotionGates()

    @field_validator("labels")
    @classmethod
    def _unique_labels(cls, labels: list[str]) -> list[str]:
        if len(set(labels)) != len(labels):
            raise ValueError("labels must be unique")
        return labels


def _short_repr(value: object) -> str:
    """``repr`` bounded in size and depth (a YAML alias bomb or a 5 MB string stays one short line)."""
    short = reprlib.Repr()  # keyword arguments need Python 3.12
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring, short.maxother = 2, 4, 4, 80, 80
    return short.repr(value)


def _format_errors(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: invalid configuration"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<top level>"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        else:
            lines.append(f"  {key}: {err['msg']} (got {_short_repr(err.get('input'))})")
    return "\n".join(lines)


def _resolve_paths(config: Config, root: Path) -> Config:
    def absolute(p: Path | None) -> Path | None:
        return None if p is None or p.is_absolute() else (root / p)

    updates: dict[str, object] = {"project_dir": absolute(config.project_dir) or config.project_dir}
    data_updates: dict[str, object] = {}
    if config.data.manifest is not None and not config.data.manifest.is_absolute():
        data_updates["manifest"] = absolute(config.data.manifest)
    if config.data.cache_dir is not None and not config.data.cache_dir.is_absolute():
        data_updates["cache_dir"] = absolute(config.data.cache_dir)
    if data_updates:
        updates["data"] = config.data.model_copy(update=data_updates)
    if config.image_encoder.pretrained_path is not None and not config.image_encoder.pretrained_path.is_absolute():
        updates["image_encoder"] = config.image_encoder.model_copy(
            update={"pretrained_path": absolute(config.image_encoder.pretrained_path)}
        )
    return config.model_copy(update=updates)


def shipped_configs_dir() -> Path:
    """The folder of the shipped configs inside the installed package (read only: nothing is written there)."""
    return Path(str(resources.files(SHIPPED_PACKAGE).joinpath(SHIPPED_FOLDER)))


def shipped_config_names() -> list[str]:
    """Names of the shipped configs (``demo``, ``chest_xray``), sorted."""
    return sorted(p.stem for p in shipped_configs_dir().glob("*.yaml"))


def is_config_name(ref: str | Path) -> bool:
    """Whether ``ref`` names a shipped config rather than a file: no folder part, no ``.yaml``/``.yml``
    suffix, and no such file in the working directory."""
    text = str(ref)
    return (
        "/" not in text and "\\" not in text and Path(text).suffix not in (".yaml", ".yml") and not Path(text).is_file()
    )


def resolve_config_path(ref: str | Path) -> Path:
    """The YAML file ``ref`` means: a shipped config by name (``demo``), else the path itself.

    Raises:
        ConfigError: ``ref`` is a name that no shipped config has.
    """
    if not is_config_name(ref):
        return Path(ref)
    path = shipped_configs_dir() / f"{ref}.yaml"
    if not path.is_file():
        known = ", ".join(shipped_config_names())
        raise ConfigError(f"{ref}: no such config file, and no shipped config of that name (shipped: {known})")
    return path


def _is_shipped(path: Path) -> bool:
    """Whether ``path`` is one of the shipped configs (inside the installed package)."""
    return path.resolve().parent == shipped_configs_dir().resolve()


def load_config(path: str | Path, overrides: dict | None = None) -> Config:
    """Load and validate a YAML config.

    Args:
        path: The YAML file, or the name of a shipped config (``demo``, ``chest_xray``).
        overrides: Nested dict merged over the file's content before validation (CLI overrides).

    Returns:
        The validated :class:`Config`. Relative paths resolve against the current working directory
        for a shipped config, else against the config's root (the parent of a ``configs/`` folder,
        else the file's folder).

    Raises:
        ConfigError: The file is missing, is not YAML, or fails validation. The message names the
            file and every offending key.
    """
    path = resolve_config_path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or type(exc).__name__}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    if overrides:
        raw = merge_overrides(raw, overrides)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(path, exc)) from None
    if _is_shipped(path):
        return _resolve_paths(config, Path.cwd())
    folder = path.resolve().parent
    root = folder.parent if folder.name == "configs" else folder
    return _resolve_paths(config, root)


def _section(model: type[BaseModel] | None, key: str) -> type[BaseModel] | None:
    """The config model of ``model``'s field ``key`` (``Optional`` unwrapped), if it is a section."""
    field = model.model_fields.get(key) if model is not None else None
    if field is None:
        return None
    for candidate in (field.annotation, *typing.get_args(field.annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def merge_overrides(base: dict, extra: dict, model: type[BaseModel] | None = None) -> dict:
    """``extra`` merged over ``base`` (nested dicts merged key by key), as the user means it.

    Setting one key of a section's :class:`Exclusive` group clears the group's other keys from
    ``base``: ``text_encoder.name_or_path`` over a config with ``text_encoder.tiny`` switches the encoder.

    Args:
        base: A config's raw mapping (YAML content or a ``model_dump``).
        extra: Nested overrides (``--set`` keys).
        model: The config model ``base`` describes (default: :class:`Config`).

    Returns:
        A new mapping; ``base`` is not modified.
    """
    model = Config if model is None else model
    merged = dict(base)
    for group in getattr(model, "exclusive_keys", ()):
        if any(k in extra for k in group.keys):
            for k in group.keys:
                if k not in extra:
                    merged.pop(k, None)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_overrides(merged[key], value, _section(model, key) or BaseModel)
        else:
            merged[key] = value
    return merged
