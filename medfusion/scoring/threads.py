"""How many torch threads the main process's CPU inference gets in a local scoring job.

The local engine's main process runs inference, the one serial stage, while ``workers`` processes
decode and preprocess (:mod:`medfusion.scoring.engine_local`). The right split of the cores follows
the cost of the two: a small model next to costly decoding wants one inference thread (a second one
only adds OpenMP overhead: the demo model scored 165 instead of 198 studies/s with two), a large model
next to cheap decoding wants most of the cores (DenseNet121 + BERT-base at 224²: 143 CPU ms/study of
inference against 48 of decoding scored 6.2 studies/s with one thread and 8.4 with two, on 2 cores).

:class:`InferenceThreads` measures both during the job (the CPU seconds of each forward pass in the
main process, the CPU seconds each worker spent on each study) and gives inference the fewest threads
that keep it off the critical path: with ``I`` and ``W`` the inference and worker CPU seconds per
study, ``k`` threads score at most ``k / I`` studies/s and the cores at most ``cores / (I + W)``, so
``k = ceil(cores * I / (I + W))``, at least one and at most all of them. The workers run at a lower
priority (``engine_local.WORKER_NICE``), so threads given to inference never wait for them, and the
workers take whatever the forward passes leave.
"""

from __future__ import annotations

import math


class InferenceThreads:
    """The main process's torch thread count, from the job's measured CPU work.

    Args:
        cores: CPU cores the job may use.
        workers: Decoding worker processes.
    """

    def __init__(self, cores: int, workers: int) -> None:
        self.cores = max(1, cores)
        self.initial = max(1, min(self.cores, self.cores - workers))
        self.inference_s = 0.0
        self.worker_s = 0.0

    def record(self, inference_cpu_s: float, worker_cpu_s: float) -> None:
        """Add one batch: the CPU seconds of its forward pass and of its studies' preparation in the workers."""
        self.inference_s += max(0.0, inference_cpu_s)
        self.worker_s += max(0.0, worker_cpu_s)

    @property
    def share(self) -> float | None:
        """Inference's share of the CPU work so far (None before any work was measured)."""
        total = self.inference_s + self.worker_s
        return self.inference_s / total if total > 0 else None

    @property
    def threads(self) -> int:
        """``ceil(cores * share)`` in ``[1, cores]``; the start value ``cores - workers`` until measured."""
        share = self.share
        if share is None:
            return self.initial
        return max(1, min(self.cores, math.ceil(self.cores * share - 1e-9)))
