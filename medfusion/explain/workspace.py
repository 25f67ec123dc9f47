"""Explanation passes on a model shared by many threads: private copies, one lock per model.

A server (the review app) loads a model once and every session and script run shares it. The
explanation methods need autograd and change the modules they run on: MONAI's ``GradCAM`` registers
hooks and ``SmoothGrad`` zeroes and accumulates parameter gradients (``zero_grad`` sets ``.grad``
to None while another thread's backward pass may be accumulating into it: a segfault in
``libtorch_python.so``), ``ModelWithHooks`` switches modes, integrated gradients hooks the word
embeddings, Grad-CAM's stage choice hooks the trunk. So:

* explanations never touch the caller's model: they run on a :class:`Workspace` of private copies,
  made once per model (deep copies, in eval mode) and kept while the model lives;
* one lock per workspace serialises every pass on those copies (forward, Grad-CAM, SmoothGrad,
  integrated gradients, attention rollout, and the tokenizer, whose Rust backend refuses to be
  re-configured from two threads at once);
* while waiting for the lock, and between steps, a caller's ``checkpoint`` is called: it may raise
  to abandon work nobody wants any more (the review app stops a superseded script run so);
* when the process exits, running explanations stop at their next step (:class:`ExplanationAbandoned`)
  and the exit waits for them (at most :data:`EXIT_WAIT_S`): a daemon thread still inside a torch
  op when the interpreter finalizes aborts the process ("terminate called without an active exception").
"""

from __future__ import annotations

import atexit
import copy
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import nn

from medfusion.errors import MedfusionError
from medfusion.explain.image import GradCamExplainer, SaliencyExplainer
from medfusion.explain.text import eager_copy
from medfusion.models.model import MedFusionModel

#: ``checkpoint(step, fraction_done)``: called while waiting and between steps; raise to abandon.
Checkpoint = Callable[[str, float], None]

#: Seconds between two checkpoints while waiting for another thread's explanation.
WAIT_POLL_S = 0.1


#: Seconds an exiting process waits for running explanations to stop.
EXIT_WAIT_S = 10.0

_CLOSING = threading.Event()


class ExplanationAbandoned(MedfusionError):
    """An explanation stopped because the process is exiting."""


def no_checkpoint(_step: str, _done: float) -> None:
    """The default :data:`Checkpoint`: never abandons."""


def guarded(checkpoint: Checkpoint) -> Checkpoint:
    """``checkpoint`` that first raises :class:`ExplanationAbandoned` once the process is exiting."""

    def check(step: str, done: float) -> None:
        if _CLOSING.is_set():
            raise ExplanationAbandoned("the process is exiting")
        checkpoint(step, done)

    return check


class Workspace:
    """Private copies of one model for explanation passes (use only while holding :attr:`lock`).

    Args:
        model: The shared model; deep-copied once here, never modified.

    Attributes:
        lock: Held by :func:`exclusive` around every pass on the copies.
        model: An eval-mode copy: forward passes, SmoothGrad and integrated gradients run on it.
    """

    def __init__(self, model: MedFusionModel) -> None:
        self.lock = threading.Lock()
        self.model: MedFusionModel = copy.deepcopy(model).eval()
        self._gradcam: dict[tuple[int, ...], GradCamExplainer] = {}
        self._saliency: SaliencyExplainer | None = None
        self._eager: nn.Module | None = None

    def gradcam(self, image_shape: tuple[int, ...]) -> GradCamExplainer:
        """The Grad-CAM explainer for ``(C, H, W)`` inputs (its own copy: MONAI's hooks stay on it)."""
        if image_shape not in self._gradcam:
            self._gradcam[image_shape] = GradCamExplainer(self.model, image_shape)
        return self._gradcam[image_shape]

    def saliency(self) -> SaliencyExplainer:
        """The SmoothGrad explainer (over :attr:`model`; it adds no hooks)."""
        if self._saliency is None:
            self._saliency = SaliencyExplainer(self.model, copy_model=False)
        return self._saliency

    def eager_transformer(self) -> nn.Module:
        """A copy of the text transformer with eager attention (SDPA returns no attention weights)."""
        if self._eager is None:
            encoder = self.model.text_encoder
            assert encoder is not None, "the model has no text encoder"
            self._eager = eager_copy(encoder.transformer)
        return self._eager

    def release_gradients(self) -> None:
        """Drop the parameter gradients the passes accumulated on the copies (memory, not results)."""
        modules = [self.model, *(g.model for g in self._gradcam.values() if g.model is not None)]
        for module in modules:
            module.zero_grad(set_to_none=True)


_WORKSPACES: weakref.WeakKeyDictionary[nn.Module, Workspace] = weakref.WeakKeyDictionary()
_REGISTRY = threading.Lock()


def workspace(model: MedFusionModel) -> Workspace:
    """The model's :class:`Workspace`, made on first use (one per model, whatever the threads)."""
    with _REGISTRY:
        found = _WORKSPACES.get(model)
        if found is None:
            if not _WORKSPACES:
                atexit.register(_stop_at_exit)  # once per process in practice; a second call is harmless
            found = _WORKSPACES[model] = Workspace(model)
        return found


def _stop_at_exit() -> None:
    """Make running explanations stop at their next step and wait (bounded) until they have."""
    _CLOSING.set()
    deadline = time.monotonic() + EXIT_WAIT_S
    with _REGISTRY:
        spaces = list(_WORKSPACES.values())
    for ws in spaces:
        if ws.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            ws.lock.release()


@contextmanager
def exclusive(model: MedFusionModel, checkpoint: Checkpoint = no_checkpoint) -> Iterator[Workspace]:
    """Hold the model's workspace for one explanation.

    Args:
        model: The shared model.
        checkpoint: Called every :data:`WAIT_POLL_S` seconds while another thread holds the
            workspace (``("waiting", 0.0)``) and once it is held (``("start", 0.0)``); whatever it
            raises propagates and nothing is held.

    Raises:
        ExplanationAbandoned: The process is exiting.

    Yields:
        The :class:`Workspace`, held until the block ends (also when it raises).
    """
    ws = workspace(model)
    checkpoint = guarded(checkpoint)
    while not ws.lock.acquire(timeout=WAIT_POLL_S):
        checkpoint("waiting", 0.0)
    try:
        checkpoint("start", 0.0)
        yield ws
    finally:
        try:
            ws.release_gradients()
        finally:
            ws.lock.release()
