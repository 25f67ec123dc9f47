"""The main process's CPU inference threads follow inference's measured share of the job's CPU work."""

from __future__ import annotations

from medfusion.scoring.threads import InferenceThreads


def test_start_value_is_the_cores_the_workers_leave() -> None:
    assert InferenceThreads(cores=2, workers=2).threads == 1
    assert InferenceThreads(cores=8, workers=2).threads == 6
    assert InferenceThreads(cores=2, workers=4).threads == 1  # never below one


def test_a_small_model_next_to_costly_decoding_gets_one_thread() -> None:
    sizing = InferenceThreads(cores=2, workers=2)
    for _ in range(10):  # demo model: ~3 ms of inference, ~5 ms of decode + preprocess per study
        sizing.record(inference_cpu_s=32 * 0.003, worker_cpu_s=32 * 0.005)
    assert sizing.share is not None and abs(sizing.share - 0.375) < 1e-9
    assert sizing.threads == 1


def test_a_large_model_next_to_cheap_decoding_gets_the_cores_its_share_asks_for() -> None:
    sizing = InferenceThreads(cores=2, workers=2)
    sizing.record(inference_cpu_s=32 * 0.143, worker_cpu_s=32 * 0.048)  # DenseNet121 + BERT-base, 224²
    assert sizing.threads == 2
    wide = InferenceThreads(cores=16, workers=8)
    wide.record(inference_cpu_s=0.143, worker_cpu_s=0.048)
    assert wide.threads == 12  # ceil(16 * 0.749): 11 threads would make inference the bottleneck
    only_inference = InferenceThreads(cores=4, workers=2)
    only_inference.record(inference_cpu_s=1.0, worker_cpu_s=0.0)  # e.g. text-only models: nothing to decode
    assert only_inference.threads == 4  # never above the cores


def test_the_share_is_of_all_the_work_so_far_not_the_last_batch() -> None:
    sizing = InferenceThreads(cores=4, workers=2)
    sizing.record(inference_cpu_s=3.0, worker_cpu_s=1.0)
    sizing.record(inference_cpu_s=1.0, worker_cpu_s=3.0)
    assert sizing.share == 0.5 and sizing.threads == 2
    sizing.record(inference_cpu_s=0.1, worker_cpu_s=0.0)
    assert sizing.threads == 3  # a share just above one half of four cores needs a third thread
