"""Small registries: a dict per kind plus a ``register_*`` decorator.

Registration happens when :mod:`medfusion.models.image_encoders` and :mod:`medfusion.models.fusion`
are imported (the decorators run at class/function definition); nothing else happens at import time.
:func:`get_image_encoder` and :func:`get_fusion` import those modules first, so a lookup never depends
on what the caller happened to import.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from medfusion.errors import MedfusionError

T = TypeVar("T")

#: name -> builder ``(ImageEncoderConfig, image_size) -> ImageEncoder``.
IMAGE_ENCODERS: dict[str, Callable] = {}
#: name -> fusion module class (subclass of :class:`medfusion.models.fusion.Fusion`).
FUSIONS: dict[str, type] = {}


def _register(table: dict, kind: str, name: str) -> Callable[[T], T]:
    def decorator(obj: T) -> T:
        if name in table:
            raise MedfusionError(f"{kind} {name!r} is already registered (by {table[name]!r})")
        table[name] = obj
        return obj

    return decorator


def register_image_encoder(name: str) -> Callable[[T], T]:
    """Register an image encoder builder under ``name`` (the value of ``image_encoder.name``)."""
    return _register(IMAGE_ENCODERS, "image encoder", name)


def register_fusion(name: str) -> Callable[[T], T]:
    """Register a fusion module class under ``name`` (the value of ``fusion.name``)."""
    return _register(FUSIONS, "fusion", name)


def get_image_encoder(name: str) -> Callable:
    """Return the image encoder builder registered as ``name``.

    Raises:
        MedfusionError: Unknown name; the message lists the known ones.
    """
    import medfusion.models.image_encoders  # noqa: F401  (registers the built-in encoders)

    if name not in IMAGE_ENCODERS:
        raise MedfusionError(f"unknown image encoder {name!r}; known: {', '.join(sorted(IMAGE_ENCODERS))}")
    return IMAGE_ENCODERS[name]


def get_fusion(name: str) -> type:
    """Return the fusion class registered as ``name``.

    Raises:
        MedfusionError: Unknown name; the message lists the known ones.
    """
    import medfusion.models.fusion  # noqa: F401  (registers the built-in fusions)

    if name not in FUSIONS:
        raise MedfusionError(f"unknown fusion {name!r}; known: {', '.join(sorted(FUSIONS))}")
    return FUSIONS[name]
