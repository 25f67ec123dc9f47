"""How many studies one task of a local scoring job's process pool carries.

Every task costs the main process a fixed amount of work whatever it carries: the pool's manager
thread wakes for the submission, its feeder thread pickles and writes the call, the manager wakes
again for the result, reads and unpickles it and sets the future, and the main thread wakes to take
it. On the demo cohort (tiny images, ~8 CPU ms of worker work per study) that was ~0.7 CPU ms per
study in the main process's pool threads alone, on top of the worker's own side of the exchange:
the largest of the costs between the pipeline and the CPU-work bound (``benchmarks/scoring.py``).

A task of several studies pays it once. How many: as many as make a task about
:data:`TASK_CPU_S` of worker CPU time (the bookkeeping then costs ~1-2 % of it), from the worker
CPU per study measured so far (an exponential mean, so an archive whose studies get costlier,
from radiographs to CT series, gets smaller tasks), and never more than :attr:`TaskSize.most`, so
each worker still has two tasks queued inside the job's window (it never waits for the main
process) and a job's last task keeps one worker busy for at most ~:data:`TASK_CPU_S` after the
others are done. Until the first study is measured a task carries one study.

Costs nothing in robustness: the watchdog still sees each study and each file its worker starts,
and when a worker dies or is stopped the studies of its unfinished tasks are retried as before
(:mod:`medfusion.scoring.engine_local`).
"""

from __future__ import annotations

#: Worker CPU seconds one task aims to carry.
TASK_CPU_S = 0.05
#: Weight of the newest study in the mean worker CPU per study.
SMOOTHING = 0.05


class TaskSize:
    """Studies per pool task, from the worker CPU time of the studies done so far.

    Args:
        most: The most studies a task may carry (at least 1).
        target_s: Worker CPU seconds a task aims to carry.
    """

    def __init__(self, most: int, target_s: float = TASK_CPU_S) -> None:
        self.most = max(1, most)
        self.target_s = target_s
        self.cpu_s: float | None = None  # mean worker CPU seconds per study (exponential)

    @classmethod
    def for_window(cls, window: int, workers: int) -> TaskSize:
        """The size whose largest value leaves each worker two tasks inside a window of ``window`` studies.

        Args:
            window: Studies in flight or waiting for inference at most.
            workers: Worker processes.
        """
        return cls(window // (4 * max(1, workers)))

    def record(self, cpu_s: float) -> None:
        """Add one study's worker CPU seconds."""
        cpu_s = max(0.0, cpu_s)
        self.cpu_s = cpu_s if self.cpu_s is None else self.cpu_s + SMOOTHING * (cpu_s - self.cpu_s)

    @property
    def studies(self) -> int:
        """``round(target_s / cpu_s)`` in ``[1, most]``; 1 until a study was measured."""
        if self.cpu_s is None:
            return 1
        if self.cpu_s <= 0:
            return self.most
        return max(1, min(self.most, round(self.target_s / self.cpu_s)))
