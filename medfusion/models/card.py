"""The model card: ``medfusion_model.json``, what a model folder holds besides its weights.

:class:`ModelCard` is the one reader and writer of that file. It records what the model needs, and
nothing of the run that made it (no ``project_dir``, manifest or pretrained-file paths of the build
machine)::

    format, format_version     "medfusion-model", 3
    name, model_id             the run's name; "<name>-<first 16 hex of the weights' SHA-256>"
    medfusion_version, created provenance
    labels, thresholds         (L,) label names and decision thresholds on calibrated probabilities
    calibration                per-label Platt scaling: {"scale": (L,), "bias": (L,)}, probability
                               sigmoid(scale_l * logit_l + bias_l) (medfusion.models.calibration)
    preprocessing              the PreprocessingSpec (medfusion.processing.spec)
    config                     the architecture: image_encoder, text_encoder (embed_dim, pooling), fusion;
                               the head is Linear(fusion.hidden_dim -> len(labels)) and has no settings
    tokenizer                  source ("tiny", a hub id, or a local folder's name), lowercase, vocab_size
    stacking                   optional (absent: the fused logits as they are): per-label weights over
                               (fused, image, text) logits fitted on validation, with their evidence
                               (medfusion.models.stacking)

Folders written with format version 1 (the whole run config under ``config``) and 2 still load; their
single ``temperature`` ``T`` becomes ``scale = 1/T`` and ``bias = 0`` for every label.

May import: :mod:`medfusion.config` (component settings), :mod:`medfusion.processing.spec`,
:mod:`medfusion.models.registry`, :mod:`medfusion.models.calibration` (torch-free at import),
:mod:`medfusion.errors`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medfusion.config import Config, FusionConfig, ImageEncoderConfig
from medfusion.errors import MedfusionError
from medfusion.models.calibration import Calibration
from medfusion.processing.spec import PreprocessingSpec

META_FILE = "medfusion_model.json"
#: Sub-folder holding the tokenizer files and the text transformer's ``config.json``.
TEXT_DIR = "text_encoder"
FORMAT = "medfusion-model"
FORMAT_VERSION = 3
#: Older format versions :meth:`ModelCard.from_dict` still reads.
_OLD_VERSIONS = (1, 2)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class TextHeadConfig(_Frozen):
    """What medfusion adds on top of the text transformer (whose own settings are its ``config.json``)."""

    embed_dim: int = Field(64, ge=4)
    pooling: Literal["cls", "mean"] = "cls"
    freeze: bool = False


class ModelConfig(_Frozen):
    """The architecture: which encoders and fusion, and their sizes.

    ``image_encoder.pretrained_path`` is always None (and ``pretrained_layout`` ``monai``) here: a saved
    model's weights are its own.
    """

    image_encoder: ImageEncoderConfig
    text_encoder: TextHeadConfig
    fusion: FusionConfig

    @classmethod
    def from_config(cls, config: Config) -> ModelConfig:
        """The architecture part of a run configuration."""
        tc = config.text_encoder
        return cls(
            image_encoder=config.image_encoder.model_copy(
                update={"pretrained_path": None, "pretrained_layout": "monai"}
            ),
            text_encoder=TextHeadConfig(embed_dim=tc.embed_dim, pooling=tc.pooling, freeze=tc.freeze),
            fusion=config.fusion,
        )


class TokenizerInfo(_Frozen):
    """Where the tokenizer came from and what it does (its files are in ``text_encoder/``).

    Attributes:
        source: ``tiny`` (trained on the run's reports), a hub id, or a local folder's name.
        lowercase: Whether it lower-cases text (None: unknown).
        vocab_size: Number of tokens (checked against the files when the folder loads).
    """

    source: str = ""
    lowercase: bool | None = None
    vocab_size: int | None = Field(None, ge=1)

    @classmethod
    def of(cls, tokenizer: Any, source: str) -> TokenizerInfo:
        """Describe a Hugging Face tokenizer."""
        lowercase = tokenizer.init_kwargs.get("do_lower_case")
        return cls(source=source, lowercase=None if lowercase is None else bool(lowercase), vocab_size=len(tokenizer))


def _text_source(config: Config) -> str:
    tc = config.text_encoder
    if tc.tiny is not None:
        return "tiny"
    name = str(tc.name_or_path)
    return Path(name).name if Path(name).is_dir() else name  # a hub id as is; a local folder by name only


class Stacking(_Frozen):
    """Per-label convex weights over the fused logits and each modality's own logits.

    Attributes:
        candidates: Weight order: ``fused``, then the modalities.
        weights: (L, K) non-negative weights, each row summing to 1.
        prior: The simplicity prior toward the fused head the weights were chosen with.
        val_auroc: Candidate (and ``stacked``) -> (L,) validation AUROC (None: label not scorable).
        val_loss: Candidate, ``stacked`` and ``minimum`` (the best grid point) -> (L,) validation score
            (Platt-rescaled cross-entropy plus the prior) the choice compared.
        val_loss_se: (L,) standard error of the chosen score's difference to the minimum.
    """

    candidates: tuple[str, ...] = ("fused", "image", "text")
    weights: tuple[tuple[float, ...], ...]
    prior: float = Field(0.0, ge=0)
    val_auroc: dict[str, tuple[float | None, ...]] = {}
    val_loss: dict[str, tuple[float | None, ...]] = {}
    val_loss_se: tuple[float | None, ...] = ()

    @model_validator(mode="after")
    def _convex(self) -> Stacking:
        for row in self.weights:
            if len(row) != len(self.candidates) or min(row) < 0 or abs(sum(row) - 1) > 1e-4:
                raise ValueError(f"stacking weights {row} are not {len(self.candidates)} non-negative summing to 1")
        return self

    def by_label(self, labels: tuple[str, ...]) -> dict[str, dict[str, float]]:
        """Label -> candidate -> weight (for logs)."""
        return {n: dict(zip(self.candidates, row, strict=True)) for n, row in zip(labels, self.weights, strict=True)}


class ModelCard(_Frozen):
    """Everything a model folder says about its model (see the module docstring for the JSON)."""

    name: str
    labels: tuple[str, ...] = Field(min_length=1)
    thresholds: tuple[float, ...]
    calibration: Calibration
    preprocessing: PreprocessingSpec
    config: ModelConfig
    tokenizer: TokenizerInfo = TokenizerInfo()
    stacking: Stacking | None = None
    model_id: str = ""
    medfusion_version: str = ""
    created: str = ""

    @model_validator(mode="after")
    def _one_threshold_per_label(self) -> ModelCard:
        if len(self.labels) != len(self.thresholds):
            raise ValueError(f"{len(self.labels)} labels but {len(self.thresholds)} thresholds")
        if self.stacking is not None and len(self.stacking.weights) != len(self.labels):
            raise ValueError(f"{len(self.labels)} labels but {len(self.stacking.weights)} rows of stacking weights")
        if self.calibration.n_labels != len(self.labels):
            raise ValueError(f"{len(self.labels)} labels but calibration for {self.calibration.n_labels}")
        return self

    @classmethod
    def from_config(cls, config: Config) -> ModelCard:
        """The card of a model about to be trained: thresholds 0.5 and identity calibration until calibrated."""
        return cls(
            name=config.name,
            labels=tuple(config.labels),
            thresholds=(0.5,) * len(config.labels),
            calibration=Calibration.identity(len(config.labels)),
            preprocessing=PreprocessingSpec.from_config(config),
            config=ModelConfig.from_config(config),
            tokenizer=TokenizerInfo(source=_text_source(config)),
        )

    def calibrated(self, thresholds: Any, calibration: Calibration) -> ModelCard:
        """A copy with the fitted decision thresholds (L,) and calibration.

        Raises:
            MedfusionError: Not one threshold, or not one calibration scale and bias, per label.
        """
        values = tuple(float(t) for t in thresholds)
        if len(values) != len(self.labels):
            raise MedfusionError(f"{len(self.labels)} labels but {len(values)} thresholds")
        if calibration.n_labels != len(self.labels):
            raise MedfusionError(f"{len(self.labels)} labels but calibration for {calibration.n_labels}")
        return self.model_copy(update={"thresholds": values, "calibration": calibration})

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities the model reads (its fusion's), e.g. ``("image", "text")``."""
        from medfusion.models.registry import get_fusion

        return tuple(get_fusion(self.config.fusion.name).modalities)

    @property
    def uses_image(self) -> bool:
        """Whether the model reads images (``text_only`` models never decode them)."""
        return "image" in self.modalities

    # ------------------------------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to ``medfusion_model.json``."""
        pretrained = {"pretrained_path", "pretrained_layout"}  # a saved model's weights are its own
        body = self.model_dump(mode="json", exclude={"config": {"image_encoder": pretrained}})
        if body.get("stacking") is None:
            body.pop("stacking", None)  # a card without stacking is written exactly as before
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **body}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model card") -> ModelCard:
        """Validate a card read from JSON (format 3; 2 and the run-config format 1 are converted).

        Raises:
            MedfusionError: Another format, or an invalid card; the message names ``source``.
        """
        fmt, version = data.get("format"), data.get("format_version")
        if fmt != FORMAT or version not in (*_OLD_VERSIONS, FORMAT_VERSION):
            raise MedfusionError(f"{source}: unsupported format {fmt!r} v{version!r}")
        body = {k: v for k, v in data.items() if k not in ("format", "format_version")}
        try:
            if version == 1:
                body = _from_v1(body)
            if version in _OLD_VERSIONS:
                body = _from_v2(body)
            return cls.model_validate(body)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # ValidationError is a ValueError
            raise MedfusionError(f"{source}: invalid model card: {exc}") from None

    @classmethod
    def load(cls, model_dir: str | Path) -> ModelCard:
        """Read ``<model_dir>/medfusion_model.json``.

        Raises:
            MedfusionError: No such file (not a model folder), unreadable JSON, or an invalid card.
        """
        path = Path(model_dir) / META_FILE
        if not path.is_file():
            raise MedfusionError(f"{model_dir}: not a medfusion model folder (no {META_FILE})")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise MedfusionError(f"{path}: unreadable: {exc}") from None
        if not isinstance(data, dict):
            raise MedfusionError(f"{path}: unreadable: expected a JSON object, got {type(data).__name__}")
        return cls.from_dict(data, source=str(path))

    def save(self, model_dir: str | Path) -> Path:
        """Write ``<model_dir>/medfusion_model.json`` (the folder must exist); returns the file."""
        path = Path(model_dir) / META_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        return path


def _from_v2(body: dict[str, Any]) -> dict[str, Any]:
    """A format-2 card (one ``temperature`` ``T``, 1.0 when absent) in the format-3 layout (scale 1/T, bias 0)."""
    rest = {k: v for k, v in body.items() if k != "temperature"}
    temperature = body.get("temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise ValueError(f"temperature must be a number, got {temperature!r}")
    return {**rest, "calibration": Calibration.from_temperature(temperature, len(body["labels"]))}


def _from_v1(body: dict[str, Any]) -> dict[str, Any]:
    """A format-1 card (the whole run config under ``config``) in the format-2 layout (then see :func:`_from_v2`)."""
    run = body["config"]
    text = run["text_encoder"]
    return {
        **{k: v for k, v in body.items() if k != "config"},
        "name": run["name"],
        "config": {
            "image_encoder": {
                k: v for k, v in run["image_encoder"].items() if k not in ("pretrained_path", "pretrained_layout")
            },
            "text_encoder": {k: text[k] for k in ("embed_dim", "pooling", "freeze") if k in text},
            "fusion": run["fusion"],
        },
    }
