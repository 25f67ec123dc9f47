"""Run configuration: YAML files validated by pydantic models.

Every model forbids unknown keys, so a typo fails loudly. :func:`load_config` turns validation
failures into a :class:`~medfusion.errors.ConfigError` naming the file and each offending key.
Relative paths in a config are resolved against the config file's folder's parent (the repository
root for files in ``configs/``), so commands work from any working directory.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medfusion.errors import ConfigError
from medfusion.ingest.dicom.selection import SeriesRuleSet


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    num_workers: int = Field(0, ge=0)
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

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if self.source == "demo" and self.manifest is not None:
            raise ValueError("data.source is 'demo' but data.manifest is set: remove one (source: manifest uses it)")
        return self


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

    @model_validator(mode="after")
    def _one_source(self) -> TextEncoderConfig:
        if (self.name_or_path is None) == (self.tiny is None):
            raise ValueError("set exactly one of 'name_or_path' and 'tiny'")
        return self


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
        description="Validation cross-entropy a full weight moved off the fused head must buy, on top of 1/n "
        "(n: the label's validation studies).",
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
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    device: str = "auto"
    early_stopping_patience: int = Field(4, ge=1)
    pos_weight: Literal["auto", "none"] = "auto"
    seed: int = 0
    val_fraction: float = Field(0.2, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)


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


def load_config(path: str | Path, overrides: dict | None = None) -> Config:
    """Load and validate a YAML config.

    Args:
        path: The YAML file.
        overrides: Nested dict merged over the file's content before validation (CLI overrides).

    Returns:
        The validated :class:`Config`, relative paths resolved against the config's repository root
        (the parent of a ``configs/`` folder, else the file's folder).

    Raises:
        ConfigError: The file is missing, is not YAML, or fails validation. The message names the
            file and every offending key.
    """
    path = Path(path)
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
        raw = _deep_merge(raw, overrides)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(path, exc)) from None
    folder = path.resolve().parent
    root = folder.parent if folder.name == "configs" else folder
    return _resolve_paths(config, root)


def _deep_merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
