"""Mixed precision (medfusion.precision): what each ``amp`` setting gives, and scoring under bfloat16.

bfloat16 keeps 8 significant bits (unit roundoff 2**-8, about 0.4 %). Through the dozen layers of a model
the relative error of a logit stays at the percent level, so for logits of a few units a sigmoid
probability (slope at most 1/4) moves by well under :data:`BF16_PROBABILITY_BOUND`; a float16 autocast
that silently fell back to float32, or a bfloat16 one that broke the model, fails the tests below.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medfusion.errors import ConfigError, MedfusionError
from medfusion.inference import Predictor, StudyInput
from medfusion.precision import AMP_MODES, resolve_amp
from medfusion.scoring.job import ScoreOptions, run_score

#: Largest change of a probability that scoring under bfloat16 may make (see the module docstring).
BF16_PROBABILITY_BOUND = 0.02


def test_amp_settings_on_cpu() -> None:
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) == (None, False)  # reduced precision is slower on most CPUs
    assert resolve_amp("off", cpu) == (None, False)
    assert resolve_amp("bf16", cpu) == (torch.bfloat16, False)
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        resolve_amp("fp16", cpu)
    with pytest.raises(ConfigError, match="'half' is not one of auto, bf16, fp16, off"):
        resolve_amp("half", cpu)
    assert set(AMP_MODES) == {"auto", "bf16", "fp16", "off"}


def test_predictor_rejects_fp16_on_cpu(tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        Predictor.from_dir(tiny_model_dir, device="cpu", amp="fp16")


def test_score_job_rejects_an_unknown_amp_before_reading_anything(tmp_path: Path) -> None:
    options = ScoreOptions(source=str(tmp_path / "missing"), out_dir=tmp_path / "out", model="nowhere", amp="fp8")
    with pytest.raises(MedfusionError, match="unknown --amp 'fp8'"):
        run_score(options)
    assert not (tmp_path / "out").exists()


def test_score_job_refuses_fp16_without_cuda_before_reading_anything(tmp_path: Path) -> None:
    options = ScoreOptions(
        source=str(tmp_path / "missing"), out_dir=tmp_path / "out", model="nowhere", device="cpu", amp="fp16"
    )
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        run_score(options)
    assert not (tmp_path / "out").exists()


def _studies(records: dict) -> list[StudyInput]:
    return [StudyInput(image_paths=r["image"], report_text=r["report"]) for r in records["test"][:12]]


def _forward_dtypes(predictor: Predictor, studies: list[StudyInput]) -> tuple[list, set[torch.dtype]]:
    """Predictions, and the dtypes the model's linear layers computed in."""
    dtypes: set[torch.dtype] = set()
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: dtypes.add(out.dtype))
        for m in predictor.loaded.model.modules()
        if isinstance(m, torch.nn.Linear)
    ]
    try:
        return predictor.predict(studies), dtypes
    finally:
        for h in hooks:
            h.remove()


def _check_bf16_close_to_fp32(model_dir: Path, device: str, amp: str, records: dict) -> None:
    studies = _studies(records)
    full, full_dtypes = _forward_dtypes(Predictor.from_dir(model_dir, device=device, amp="off"), studies)
    half, half_dtypes = _forward_dtypes(Predictor.from_dir(model_dir, device=device, amp=amp), studies)
    assert full_dtypes == {torch.float32} and half_dtypes == {torch.bfloat16}
    p_full = np.stack([p.probabilities for p in full])  # (N, L)
    p_half = np.stack([p.probabilities for p in half])  # (N, L)
    assert np.all(np.isfinite(p_half))
    assert np.abs(p_half - p_full).max() <= BF16_PROBABILITY_BOUND
    assert not np.array_equal(p_half, p_full)  # the reduced precision really ran


def test_bf16_scoring_on_cpu_stays_within_the_bound(tiny_model_dir: Path, synthetic_records: dict) -> None:
    _check_bf16_close_to_fp32(tiny_model_dir, "cpu", "bf16", synthetic_records)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_is_bf16_on_a_gpu_that_has_it(tiny_model_dir: Path, synthetic_records: dict) -> None:
    dtype, scaler = resolve_amp("auto", torch.device("cuda"))
    if not torch.cuda.is_bf16_supported():
        assert (dtype, scaler) == (torch.float16, True)
        pytest.skip("this GPU has no bfloat16: auto is float16")
    assert (dtype, scaler) == (torch.bfloat16, False)
    _check_bf16_close_to_fp32(tiny_model_dir, "cuda", "auto", synthetic_records)
