"""Small registries, the single source of component names: a dict per kind plus a ``register_*`` decorator.

Registration happens when :mod:`medfusion.models.image_encoders` and :mod:`medfusion.models.fusion`
are imported (the decorators run at class/function definition); nothing else happens at import time.
:func:`get_image_encoder`, :func:`get_fusion` and the ``*_names`` functions import those modules first,
so a lookup never depends on what the caller happened to import. Config validation
(:mod:`medfusion.config`) asks :func:`image_encoder_names` and :func:`fusion_names`, so a component
registered by a user's module (imported before the config is validated) can be selected by name.

May import: :mod:`medfusion.errors` only (the registered modules import this one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from medfusion.errors import MedfusionError

if TYPE_CHECKING:
    from medfusion.config import ImageEncoderConfig
    from medfusion.models.fusion import Fusion
    from medfusion.models.image_encoders import ImageEncoder

#: ``(ImageEncoderConfig, image_size) -> ImageEncoder``: builds the architecture (random weights).
ImageEncoderBuilder = Callable[["ImageEncoderConfig", Sequence[int]], "ImageEncoder"]

T = TypeVar("T")
B = TypeVar("B", bound=ImageEncoderBuilder)
F = TypeVar("F", bound="type[Fusion]")

#: name -> image encoder builder (the value of ``image_encoder.name``).
IMAGE_ENCODERS: dict[str, ImageEncoderBuilder] = {}
#: name -> fusion module class (the value of ``fusion.name``).
FUSIONS: dict[str, type[Fusion]] = {}


def _register(table: dict[str, Any], kind: str, name: str) -> Callable[[T], T]:
    def decorator(obj: T) -> T:
        if name in table:
            raise MedfusionError(f"{kind} {name!r} is already registered (by {table[name]!r})")
        table[name] = obj
        return obj

    return decorator


def register_image_encoder(name: str) -> Callable[[B], B]:
    """Register an image encoder builder under ``name`` (the value of ``image_encoder.name``)."""
    return _register(IMAGE_ENCODERS, "image encoder", name)


def register_fusion(name: str) -> Callable[[F], F]:
    """Register a fusion module class (a :class:`~medfusion.models.fusion.Fusion`) under ``name``."""
    return _register(FUSIONS, "fusion", name)


def image_encoder_names() -> list[str]:
    """Every registered image encoder name, sorted (built-ins included)."""
    import medfusion.models.image_encoders  # noqa: F401  (registers the built-in encoders)

    return sorted(IMAGE_ENCODERS)


def fusion_names() -> list[str]:
    """Every registered fusion name, sorted (built-ins included)."""
    import medfusion.models.fusion  # noqa: F401  (registers the built-in fusions)

    return sorted(FUSIONS)


def _lookup(table: dict[str, T], known: list[str], kind: str, name: str) -> T:
    if name not in table:
        raise MedfusionError(f"unknown {kind} {name!r}; known: {', '.join(known)}")
    return table[name]


def get_image_encoder(name: str) -> ImageEncoderBuilder:
    """Return the image encoder builder registered as ``name``.

    Raises:
        MedfusionError: Unknown name; the message lists the known ones.
    """
    return _lookup(IMAGE_ENCODERS, image_encoder_names(), "image encoder", name)


def get_fusion(name: str) -> type[Fusion]:
    """Return the fusion class registered as ``name``.

    Raises:
        MedfusionError: Unknown name; the message lists the known ones.
    """
    return _lookup(FUSIONS, fusion_names(), "fusion", name)
