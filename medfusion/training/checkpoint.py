"""Per-epoch training checkpoints that survive a kill, and resuming from them.

After every epoch :meth:`EpochCheckpoints.commit` writes, under ``<out_dir>/checkpoints/``:

* ``epoch-<n>.safetensors``: the model weights after epoch ``n``;
* ``epoch-<n>-state.pt``: optimizer, LR scheduler and grad-scaler state and every random state
  (python, numpy, torch CPU/CUDA, the modality-dropout generator, each DataLoader's generator and
  the random state of each augmentation transform); plain tensors, numbers and lists only, read
  back with ``torch.load(weights_only=True)``;
* ``state.json`` last, atomically (write then rename): the commit. It names the epoch, the files
  of the last and of the best epoch, the best score, the early-stopping counter, the history and a
  fingerprint of the configuration.

In a distributed run (:mod:`medfusion.training.distributed`) rank 0 writes the files; the random
states of every rank are gathered into ``rng_by_rank`` so that each rank continues its own streams.

A kill at any moment leaves the previous commit intact; files of an uncommitted epoch are removed
on resume. Only the last and the best epoch's weights are kept. On CPU a resumed run gives the same
weights and metrics as an uninterrupted one (the random states continue exactly).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from medfusion.config import Config
from medfusion.errors import MedfusionError
from medfusion.training import distributed

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
BEST_FILE = "best.safetensors"
FORMAT = "medfusion-train-checkpoint-v1"


def checkpoint_state(run_dir: str | Path) -> Path:
    """The commit file of a run folder's last epoch checkpoint (``<run_dir>/checkpoints/state.json``; may not exist)."""
    return Path(run_dir) / "checkpoints" / STATE_FILE


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether a run folder holds a committed epoch checkpoint to resume from."""
    return checkpoint_state(run_dir).is_file()


def config_fingerprint(config: Config) -> str:
    """SHA-256 (16 hex) of the resolved configuration; a run resumes only under the same one."""
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]


@dataclass
class ResumeState:
    """Where training stands after the last committed epoch."""

    epoch: int = 0
    best_score: float = float("-inf")
    best_epoch: int = 0
    stale: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def _augmentations(loader: Any) -> Any:
    """The image transform chain of a loader's dataset (its random draws are part of the training state)."""
    return getattr(getattr(loader.dataset, "preprocessor", None), "transform", None)


def _random_states(
    obj: Any, prefix: str = "", seen: set[int] | None = None, depth: int = 0
) -> dict[str, np.random.RandomState]:
    """Every ``numpy.random.RandomState`` reachable from ``obj`` (MONAI transforms keep theirs in ``R``)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 6:
        return {}
    seen.add(id(obj))
    if isinstance(obj, np.random.RandomState):
        return {prefix: obj}
    found: dict[str, np.random.RandomState] = {}
    children: list[tuple[str, Any]] = []
    if isinstance(obj, (list, tuple)):
        children = [(str(i), v) for i, v in enumerate(obj)]
    elif hasattr(obj, "__dict__") and type(obj).__module__.split(".")[0] in ("monai", "medfusion"):
        children = sorted(vars(obj).items())
    for name, child in children:
        found.update(_random_states(child, f"{prefix}.{name}" if prefix else name, seen, depth + 1))
    return found


def _np_state(rs: np.random.RandomState | None = None) -> list[Any]:
    # legacy=True is numpy's default (the stubs' overloads say otherwise): the MT19937 5-tuple.
    state = rs.get_state(legacy=True) if rs is not None else np.random.get_state(legacy=True)
    if isinstance(state, dict):
        raise TypeError(f"expected an MT19937 random state, got bit generator {state.get('bit_generator')!r}")
    kind, keys, pos, has_gauss, cached = state
    return [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _set_np_state(state: list[Any], rs: np.random.RandomState | None = None) -> None:
    value = (state[0], np.asarray(state[1], dtype=np.uint32), state[2], state[3], state[4])
    (rs.set_state if rs is not None else np.random.set_state)(value)


class EpochCheckpoints:
    """Commits and restores the complete training state of one run folder.

    Args:
        out_dir: The run folder (checkpoints go to ``out_dir/checkpoints``).
        config: The run's configuration (its fingerprint guards resuming).
        writer: Whether this process writes (rank 0 of a distributed run; every rank takes part in
            :meth:`commit`, which gathers the ranks' random states).
        parts: What to save and restore: ``model``, ``optimizer``, ``scheduler``, ``scaler``,
            ``dropout_rng`` (a ``torch.Generator``) and ``loaders`` (split -> DataLoader).
    """

    def __init__(self, out_dir: Path, config: Config, *, writer: bool = True, **parts: Any) -> None:
        self.dir = Path(out_dir) / "checkpoints"
        self.writer = writer
        if writer:
            self.dir.mkdir(parents=True, exist_ok=True)
        self.fingerprint = config_fingerprint(config)
        self.parts = parts

    # ------------------------------------------------------------------------------------- save
    def _training_state(self) -> dict[str, Any]:
        p = self.parts
        transforms = {
            f"{split}.{name}": _np_state(rs)
            for split, loader in sorted(p["loaders"].items())
            for name, rs in _random_states(_augmentations(loader)).items()
        }
        return {
            "optimizer": p["optimizer"].state_dict(),
            "scheduler": p["scheduler"].state_dict(),
            "scaler": p["scaler"].state_dict(),
            "rng": {
                "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
                "numpy": _np_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "dropout": p["dropout_rng"].get_state(),
                "loaders": {
                    s: ld.generator.get_state() for s, ld in sorted(p["loaders"].items()) if ld.generator is not None
                },
                "transforms": transforms,
            },
        }

    def commit(self, state: ResumeState, improved: bool) -> None:
        """Save epoch ``state.epoch`` and make it the one a resume continues from."""
        n = state.epoch
        weights, extra = f"epoch-{n}.safetensors", f"epoch-{n}-state.pt"
        training_state = self._training_state()
        if distributed.current().active:
            training_state["rng_by_rank"] = distributed.all_gather(training_state["rng"])
        if not self.writer:
            return
        save_model(self.parts["model"], str(self.dir / weights), metadata={"epoch": str(n)})
        torch.save(training_state, self.dir / extra)
        previous = self._read_json()
        best = weights if improved else (previous or {}).get("best_weights")
        record = {
            "format": FORMAT,
            "config_fingerprint": self.fingerprint,
            "epoch": n,
            "weights": weights,
            "training_state": extra,
            "best_weights": best,
            "best_score": state.best_score,
            "best_epoch": state.best_epoch,
            "stale": state.stale,
            "history": state.history,
        }
        tmp = self.dir / f"{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
        os.replace(tmp, self.dir / STATE_FILE)  # the commit
        self._remove_uncommitted(keep={weights, extra, best})

    def _remove_uncommitted(self, keep: set[str | None]) -> None:
        for path in self.dir.glob("epoch-*"):
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def _read_json(self) -> dict[str, Any] | None:
        path = self.dir / STATE_FILE
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise MedfusionError(f"{path}: unreadable checkpoint state: {exc}") from None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise MedfusionError(f"{path}: not a medfusion training checkpoint")
        return record

    # ---------------------------------------------------------------------------------- restore
    def restore(self) -> ResumeState:
        """Load the last committed epoch into the parts; a fresh :class:`ResumeState` when there is none.

        Raises:
            MedfusionError: The checkpoint was made with another configuration, or is unreadable.
        """
        record = self._read_json()
        if record is None:
            return ResumeState()
        if record["config_fingerprint"] != self.fingerprint:
            raise MedfusionError(
                f"{self.dir / STATE_FILE}: checkpoint was written with another configuration "
                f"({record['config_fingerprint']} != {self.fingerprint}); resume with the same config or a new out_dir"
            )
        if self.writer:
            self._remove_uncommitted(keep={record["weights"], record["training_state"], record["best_weights"]})
        p = self.parts
        load_model(p["model"], str(self.dir / record["weights"]), strict=True)
        extra = torch.load(self.dir / record["training_state"], map_location="cpu", weights_only=True)
        p["optimizer"].load_state_dict(extra["optimizer"])
        p["scheduler"].load_state_dict(extra["scheduler"])
        p["scaler"].load_state_dict(extra["scaler"])
        rng = extra["rng"]
        info = distributed.current()
        by_rank = extra.get("rng_by_rank") or []
        if len(by_rank) == info.world_size and info.active:
            rng = by_rank[info.rank]
        elif info.active or by_rank:
            log.warning(
                "resuming a %d-process run on %d process(es): random streams restart from rank 0's; "
                "the result will not match an uninterrupted run exactly",
                max(1, len(by_rank)),
                info.world_size,
            )
        python = rng["python"]
        random.setstate((python[0], tuple(python[1]), python[2]))
        _set_np_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        p["dropout_rng"].set_state(rng["dropout"])
        for split, state in rng["loaders"].items():
            p["loaders"][split].generator.set_state(state)
        for split, loader in p["loaders"].items():
            for name, rs in _random_states(_augmentations(loader)).items():
                if f"{split}.{name}" in rng["transforms"]:
                    _set_np_state(rng["transforms"][f"{split}.{name}"], rs)
        return ResumeState(
            epoch=int(record["epoch"]),
            best_score=float(record["best_score"]),
            best_epoch=int(record["best_epoch"]),
            stale=int(record["stale"]),
            history=list(record["history"]),
        )

    def finalize(self) -> Path:
        """Move the best epoch's weights to ``checkpoints/best.safetensors`` and drop the epoch files.

        A finished run has nothing to resume, so only the best weights stay.

        Returns:
            The path of ``best.safetensors``.
        """
        record = self._read_json()
        if record is None or not record.get("best_weights"):
            raise MedfusionError(f"{self.dir}: no committed epoch to take the best weights from")
        target = self.dir / BEST_FILE
        os.replace(self.dir / record["best_weights"], target)
        self.clear()
        return target

    def clear(self) -> None:
        """Remove the commit and every epoch file (a fresh, non-resumed run starts with this)."""
        (self.dir / STATE_FILE).unlink(missing_ok=True)
        self._remove_uncommitted(keep=set())
