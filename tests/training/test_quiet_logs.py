"""Logs say what a run does: no image encoder named in a text-only run, no vocabulary trained for an
image-only run, no transformers "sequence length" alarm for reports medfusion truncates on purpose."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from medfusion.inference import Predictor
from medfusion.models.tokenizer import SPECIAL_TOKENS
from medfusion.processing.sample import StudyInput
from medfusion.training.engine import train
from medfusion.training.text_setup import warn_if_truncated
from tests.support.synthetic import Record, fast_config
from tests.support.text import write_tiny_text_dir
from tests.support.threads import single_thread


def _train(fusion: str, records: dict[str, list[Record]], out: Path, caplog: pytest.LogCaptureFixture) -> Path:
    with caplog.at_level(logging.DEBUG, logger="medfusion"), single_thread():
        result = train(fast_config(fusion, epochs=1), records, out, progress=True)
    return Path(result.model_dir)


def _training_line(caplog: pytest.LogCaptureFixture) -> str:
    return next(r.getMessage() for r in caplog.records if r.getMessage().startswith("training synthetic"))


def test_a_text_only_run_names_no_image_encoder(
    synthetic_records: dict[str, list[Record]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _train("text_only", synthetic_records, tmp_path, caplog)
    line = _training_line(caplog)
    assert "image encoder" not in line and "vit" not in line
    assert "text_only fusion: tiny BERT text encoder" in line


def test_an_image_only_run_trains_no_vocabulary(
    synthetic_records: dict[str, list[Record]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model_dir = _train("image_only", synthetic_records, tmp_path, caplog)
    messages = [r.getMessage() for r in caplog.records]
    assert not any("vocabulary" in m and "tiny BERT" in m for m in messages), messages
    assert "image_only fusion: vit image encoder" in _training_line(caplog)
    assert not any("text encoder" in m for m in messages if m.startswith("training "))
    predictor = Predictor.from_dir(model_dir)
    assert len(predictor.preprocessor.tokenizer) == len(SPECIAL_TOKENS)  # no report word saved with the model
    study = synthetic_records["test"][0]
    [prediction] = predictor.predict([StudyInput(image_paths=study["image"], report_text=study["report"])])
    assert np.all((prediction.probabilities >= 0) & (prediction.probabilities <= 1))


def test_measuring_report_lengths_raises_no_transformers_alarm(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(write_tiny_text_dir(tmp_path)))
    long_report = "FINDINGS: " + "small left pleural effusion. " * 200  # > 512 tokens
    capfd.readouterr()
    with caplog.at_level(logging.WARNING):
        fraction = warn_if_truncated(tokenizer, [long_report, "No effusion."], max_tokens=64)
    assert fraction == 0.5
    assert any("longer than data.max_tokens=64" in r.getMessage() for r in caplog.records)  # ours, once
    captured = capfd.readouterr()
    everything = captured.err + captured.out + " ".join(r.getMessage() for r in caplog.records)
    assert "sequence length is longer than the specified maximum" not in everything
