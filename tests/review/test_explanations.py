"""The app's shared explanation cache: bounded by entries and bytes, shared while waiting for the model."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from medfusion.explain import StudyExplanation
from medfusion.explain.workspace import exclusive
from medfusion.inference import Predictor, StudyInput
from medfusion.review.data import study_input
from medfusion.review.explanations import (
    ExplanationCache,
    explain_cached,
    explanation_nbytes,
)


def _explanation(side: int, labels: int = 2) -> StudyExplanation:
    """A hand-made explanation whose arrays hold a known number of bytes."""
    return StudyExplanation(
        labels=[f"l{i}" for i in range(labels)],
        probabilities=np.zeros(labels, np.float32),
        thresholds=np.full(labels, 0.5, np.float32),
        image=np.zeros((side, side), np.float32),
        heatmaps={"saliency": np.zeros((labels, side, side), np.float32)},
    )


def test_nbytes_counts_every_array() -> None:
    assert explanation_nbytes(_explanation(10)) == 4 * (2 + 2 + 100 + 200)


def test_least_recently_used_goes_first_when_entries_overflow() -> None:
    cache = ExplanationCache(max_entries=2)
    a, b, c = _explanation(4), _explanation(4), _explanation(4)
    cache.put("a", a)
    cache.put("b", b)
    assert cache.get("a") is a  # now b is the least recently used
    cache.put("c", c)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (a, None, c)
    assert len(cache) == 2


def test_bytes_are_bounded_and_an_oversized_explanation_is_not_kept() -> None:
    one = explanation_nbytes(_explanation(16))
    cache = ExplanationCache(max_entries=100, max_bytes=3 * one)
    for i in range(5):
        cache.put(i, _explanation(16))
    assert len(cache) == 3 and cache.nbytes == 3 * one
    assert cache.get(0) is None and cache.get(4) is not None
    cache.put("big", _explanation(64))
    assert cache.get("big") is None and cache.nbytes == 3 * one
    cache.put(4, _explanation(16))  # replacing a key does not count it twice
    assert len(cache) == 3 and cache.nbytes == 3 * one


@pytest.fixture(scope="module")
def predictor(review_project) -> Predictor:
    return Predictor.from_dir(review_project.demo.model_dir, device="cpu")


def test_a_cached_explanation_is_returned_as_is(predictor) -> None:
    cache, ready = ExplanationCache(), _explanation(4)
    cache.put("k", ready)
    study = StudyInput(image_paths=["/nonexistent/never-read.dcm"], report_text="")
    assert explain_cached(cache, "k", predictor, study) is ready  # no image read, no model pass


def test_a_waiting_request_takes_the_explanation_another_session_finished(predictor, review_project) -> None:
    from medfusion.scoring import read_results

    uid = read_results(review_project.results_dir)["study_uid"].iloc[0]
    study = study_input(review_project.results_dir, uid)
    cache, finished = ExplanationCache(), _explanation(4)
    # another session's explanation holds the model ...
    with exclusive(predictor.loaded.model), ThreadPoolExecutor(1) as pool:
        future = pool.submit(explain_cached, cache, "k", predictor, study)
        time.sleep(0.5)
        assert not future.done()
        cache.put("k", finished)  # ... and caches its result
        assert future.result(timeout=30) is finished  # taken while the model is still held
