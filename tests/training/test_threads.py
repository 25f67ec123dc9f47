"""training.threads / --threads: the training process runs with that many torch threads (default 1)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from medfusion.cli import app
from medfusion.config import Config
from medfusion.training.engine import TrainResult, train
from tests.support.synthetic import Record, fast_config


class ThreadProbe:
    """A callback that notes the torch thread count during training."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.seen.append(torch.get_num_threads())

    def on_train_end(self, result: TrainResult) -> None:
        self.seen.append(torch.get_num_threads())


def test_default_is_one_thread() -> None:
    assert Config(labels=["a"]).training.threads == 1


@pytest.mark.parametrize("threads", [1, 2])
def test_training_runs_with_the_configured_threads_and_restores_them(
    threads: int, synthetic_records: dict[str, list[Record]], tmp_path: Path
) -> None:
    before = torch.get_num_threads()
    ambient = 3 - threads  # the other count, so the setting is visible
    torch.set_num_threads(ambient)
    try:
        probe = ThreadProbe()
        train(fast_config(epochs=1, threads=threads), synthetic_records, tmp_path, callbacks=[probe], progress=False)
        assert probe.seen and set(probe.seen) == {threads}
        assert torch.get_num_threads() == ambient
    finally:
        torch.set_num_threads(before)


def test_threads_option_is_validated() -> None:
    result = CliRunner().invoke(app, ["train", "--threads", "0"])
    assert result.exit_code == 2 and "--threads" in result.output
    help_text = " ".join(CliRunner().invoke(app, ["train", "--help"]).output.split())
    assert "--threads" in help_text and "training.threads" in help_text
