"""The process-tree memory sampler of ``benchmarks/score_memory.py`` sees a grandchild's allocation."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
MB = 1024 * 1024


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("score_memory_benchmark", ROOT / "benchmarks" / "score_memory.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _tree(bench: ModuleType, mb: int) -> object:
    """Sample a process whose child (the root's grandchild in the tree) writes ``mb`` MB and holds it 0.6 s."""
    grandchild = f"import time; b = b'x' * ({mb} * {MB}); time.sleep(0.6)"
    root = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grandchild!r}], check=True)"
    proc = subprocess.Popen([sys.executable, "-c", root])
    with bench.TreeSampler(proc.pid, interval_s=0.02) as sampler:
        assert proc.wait(timeout=60) == 0
    return sampler.memory


def test_tree_sampler_sees_a_descendants_allocation(bench: ModuleType) -> None:
    idle = _tree(bench, 0)
    busy = _tree(bench, 50)
    assert busy.max_processes == 2 and busy.samples >= 10
    # The 50 MB written by the child count in the tree's peak and in the largest single process,
    # not in the root's own RSS.
    assert busy.peak_tree - idle.peak_tree >= 40 * MB
    assert busy.peak_proc >= 50 * MB
    assert busy.peak_main - idle.peak_main < 10 * MB
    t, tree, main, _ = busy.timeline[-1]
    assert tree >= main > 0 and t > 0
