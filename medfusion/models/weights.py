"""Loading weights files without running code: safetensors, or ``torch.load(weights_only=True)``.

Pickle can execute arbitrary code while loading, so a weights file from anywhere but our own
training runs is untrusted. :func:`load_state_dict` reads ``.safetensors`` (no code at all) and
``.pt``/``.pth``/``.bin``/``.ckpt`` with PyTorch's restricted unpickler (tensors, containers and
primitive types only); anything that needs more, and plain pickle files (``.pkl``, ``.pickle``,
``.joblib``), is refused with :class:`~medfusion.errors.UnsafeModelFile`. Model folders written by
medfusion hold safetensors only (:mod:`medfusion.models.model`).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from medfusion.errors import MedfusionError, UnsafeModelFile

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".dill", ".cloudpickle")


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict (name -> tensor) from a weights file, on CPU, without executing code.

    Args:
        path: ``.safetensors`` (preferred) or a ``torch.save`` file of tensors.

    Returns:
        The state dict. A ``{"state_dict": {...}}`` wrapper (Lightning, MONAI bundles) is unwrapped.

    Raises:
        UnsafeModelFile: The file is a pickle, or a ``torch.save`` file holding objects other than
            tensors, containers and primitives (it would need the full unpickler).
        MedfusionError: The file is missing, corrupt, of an unknown kind, or not a dict of tensors.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise UnsafeModelFile(
            path, "pickle files can run arbitrary code when loaded; refusing (convert the weights to .safetensors)"
        )
    if not path.is_file():
        raise MedfusionError(f"{path}: weights file not found")
    state: object
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise MedfusionError(f"{path}: not a readable safetensors file: {exc}") from None
    elif suffix in TORCH_SUFFIXES:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            found = re.search(r"(?:Unsupported global: |unsupported )GLOBAL (\S+)", str(exc))
            if found:
                raise UnsafeModelFile(
                    path,
                    f"holds pickled objects other than tensors ({found.group(1)}), which could run code when "
                    "loaded; refusing (save a plain state dict or .safetensors instead)",
                ) from None
            detail = re.search(r"WeightsUnpickler error: (.+)", str(exc))
            raise MedfusionError(
                f"{path}: not a readable torch file: {detail.group(1).strip() if detail else 'unpickling failed'}"
            ) from None
        except (RuntimeError, OSError, EOFError, ValueError) as exc:
            raise MedfusionError(f"{path}: not a readable torch file: {str(exc).splitlines()[0][:200]}") from None
    else:
        raise MedfusionError(f"{path}: unsupported weights format {suffix or '(none)'!r}; use .safetensors or .pt")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MedfusionError(f"{path}: expected a state dict of tensors, found {type(state).__name__}")
    return state
