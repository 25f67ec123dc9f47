"""explain_study on one model shared by several threads: the results of one thread, the model untouched.

The review app shares one loaded model between every session and script run; explanation passes
used to run backward passes on shared modules at once (a segfault in ``libtorch_python.so``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import torch

from medfusion.explain import METHODS, StudyExplanation, explain_study
from medfusion.explain.workspace import exclusive, workspace
from medfusion.inference import Predictor, StudyInput

THREADS = 4


class Abandoned(Exception):
    """Raised by the tests' checkpoints."""


@pytest.fixture(scope="module")
def study(demo_test_records) -> StudyInput:
    record = next(r for r in demo_test_records if r["image"] and r["report"])
    return StudyInput(image_paths=record["image"], report_text=record["report"])


@pytest.fixture(scope="module")
def reference(demo_predictor, study) -> StudyExplanation:
    return explain_study(demo_predictor, study)


@pytest.fixture
def fresh(demo_project) -> Predictor:
    """A newly loaded copy of the demo model: no explanation has touched it yet."""
    return Predictor.from_dir(demo_project.model_dir, device="cpu")


def _state(model: torch.nn.Module) -> dict[str, Any]:
    """Everything about a model an explanation pass could change."""
    return {
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "grads": [n for n, p in model.named_parameters() if p.grad is not None],
        "hooks": {
            n: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks), len(m._backward_pre_hooks))
            for n, m in model.named_modules()
        },
        "training": {n: m.training for n, m in model.named_modules()},
        "inplace": {n: m.inplace for n, m in model.named_modules() if hasattr(m, "inplace")},
        "tensors": {n: t.detach().clone() for n, t in [*model.named_parameters(), *model.named_buffers()]},
    }


def _assert_same_state(before: dict[str, Any], after: dict[str, Any]) -> None:
    for key in ("requires_grad", "grads", "hooks", "training", "inplace"):
        assert after[key] == before[key], key
    assert after["tensors"].keys() == before["tensors"].keys()
    changed = [n for n, t in before["tensors"].items() if not torch.equal(t, after["tensors"][n])]
    assert changed == []


def _assert_same_explanation(ex: StudyExplanation, ref: StudyExplanation) -> None:
    assert set(ex.heatmaps) == set(ref.heatmaps) == {"cross_attention", "gradcam", "saliency"}
    assert set(ex.token_scores) == set(ref.token_scores) == {"attention", "gradient", "occlusion"}
    for name in ref.heatmaps:
        np.testing.assert_allclose(ex.heatmaps[name], ref.heatmaps[name], rtol=0, atol=1e-6, err_msg=name)
    for name in ref.token_scores:
        np.testing.assert_allclose(ex.token_scores[name], ref.token_scores[name], rtol=0, atol=1e-6, err_msg=name)
    for slot in ref.modality_contributions:
        np.testing.assert_allclose(ex.modality_contributions[slot], ref.modality_contributions[slot], rtol=0, atol=1e-6)
    np.testing.assert_allclose(ex.probabilities, ref.probabilities, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(ex.image, ref.image)
    assert ex.token_spans == ref.token_spans


def test_four_threads_on_one_model_give_the_single_thread_results_and_leave_the_model_alone(fresh, study, reference):
    model = fresh.loaded.model
    before = _state(model)
    start = threading.Barrier(THREADS)

    def explain() -> StudyExplanation:
        start.wait(30)  # all four race from the first call on, when the model's workspace does not exist yet
        return explain_study(fresh, study, METHODS)

    with ThreadPoolExecutor(THREADS) as pool:
        results = [f.result(timeout=900) for f in [pool.submit(explain) for _ in range(THREADS)]]
    assert len(results) == THREADS
    for ex in results:
        _assert_same_explanation(ex, reference)
    _assert_same_state(before, _state(model))
    private = workspace(model).model  # the copies the passes ran on share no storage with the model
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(model.parameters(), private.parameters(), strict=True))


def test_a_checkpoint_that_raises_abandons_the_explanation_and_frees_the_model(fresh, study, reference):
    steps: list[str] = []

    def checkpoint(step: str, done: float) -> None:
        steps.append(step)
        assert 0.0 <= done <= 1.0
        if step == "saliency":
            raise Abandoned(step)

    with pytest.raises(Abandoned):
        explain_study(fresh, study, METHODS, checkpoint=checkpoint)
    assert steps[:2] == ["start", "forward"] and "gradcam" in steps and "gradient" not in steps
    assert not workspace(fresh.loaded.model).lock.locked()
    _assert_same_explanation(explain_study(fresh, study, METHODS), reference)  # nothing half-done left behind


def test_a_waiting_explanation_can_be_abandoned_while_another_holds_the_model(fresh, study):
    steps: list[str] = []

    def checkpoint(step: str, _done: float) -> None:
        steps.append(step)
        if len(steps) >= 3:
            raise Abandoned(step)

    with exclusive(fresh.loaded.model):  # another thread's explanation, as far as explain_study can tell
        began = time.monotonic()
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(explain_study, fresh, study, METHODS, checkpoint=checkpoint)
            with pytest.raises(Abandoned):
                future.result(timeout=60)
        waited = time.monotonic() - began
    assert steps == ["waiting"] * 3
    assert waited < 10  # it gave up while waiting, it did not wait for the holder


def test_exiting_while_an_explanation_runs_stops_it_instead_of_aborting(demo_project, study):
    """A daemon thread inside a torch op when the interpreter finalizes aborts the process (exit 134,
    "terminate called without an active exception"): a server stopped mid-explanation did that."""
    code = textwrap.dedent(f"""
        import atexit, threading, time, torch
        torch.set_num_threads(1)
        from medfusion.explain import explain_study
        from medfusion.inference import Predictor, StudyInput
        predictor = Predictor.from_dir({str(demo_project.model_dir)!r}, device="cpu")
        study = StudyInput(image_paths={list(study.image_paths)!r}, report_text={study.report_text!r})
        started = threading.Event()
        outcome = []
        def slow(step, done):  # keeps the explanation running well past the exit
            started.set()
            time.sleep(0.3)
        def explain():
            try:
                explain_study(predictor, study, checkpoint=slow)
                outcome.append("finished")
            except BaseException as exc:
                outcome.append(f"{{type(exc).__name__}}: {{exc}}")
        def report():  # registered before medfusion's own exit hook, so it runs after it (LIFO)
            worker.join(60)
            print("outcome:", outcome, flush=True)
        atexit.register(report)
        worker = threading.Thread(target=explain, daemon=True)
        worker.start()
        started.wait(120)
        print("exiting", flush=True)
    """)
    env = {**os.environ, "PYTHONFAULTHANDLER": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "exiting" in proc.stdout and "Fatal Python error" not in proc.stderr
    # stopped at its next step, within medfusion's exit hook's wait
    assert "outcome: ['ExplanationAbandoned: the process is exiting']" in proc.stdout, proc.stdout
