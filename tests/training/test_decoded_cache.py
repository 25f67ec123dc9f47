"""The on-disk decoded-image cache: same samples as decoding, no decoding on hits, misses when a file
or the preprocessing changes, corrupt or planted entries rebuilt (never executed), concurrent writers."""

from __future__ import annotations

import dataclasses
import pickle
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import torch

from medfusion.processing.preprocessor import Preprocessor
from medfusion.processing.spec import PreprocessingSpec
from medfusion.training.data import StudyDataset
from medfusion.training.engine import train
from tests.support.synthetic import LABELS, fast_config
from tests.support.threads import single_thread


def _preprocessor(tokenizer: Any, *, train: bool = False, **spec: Any) -> Preprocessor:
    settings = PreprocessingSpec.from_config(fast_config()).model_copy(update=spec)
    return Preprocessor(settings, tokenizer, len(LABELS), train=train, seed=0)


def _with_images(records: list[dict]) -> int:
    return sum(bool(r.get("image")) for r in records)


def _copy_records(records: list[dict], folder: Path) -> list[dict]:
    """The records with their image files copied (so a test may change them)."""
    copies = []
    folder.mkdir(parents=True, exist_ok=True)
    for i, record in enumerate(records):
        paths = []
        for j, path in enumerate(record.get("image") or []):
            target = folder / f"{i}_{j}.dcm"
            target.write_bytes(Path(path).read_bytes())
            paths.append(str(target))
        copies.append({**record, "image": paths})
    return copies


@pytest.mark.parametrize("train_flavour", [False, True], ids=["eval", "train"])
def test_cached_samples_equal_decoded_ones_and_the_second_run_decodes_nothing(
    synthetic_records: dict,
    synthetic_tokenizer: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    train_flavour: bool,
) -> None:
    records = synthetic_records["train"][:12]  # 7: no image, 9: a broken file
    memory = StudyDataset(records, _preprocessor(synthetic_tokenizer, train=train_flavour))
    first = StudyDataset(records, _preprocessor(synthetic_tokenizer, train=train_flavour), cache_dir=tmp_path)
    assert first.disk_cache is not None
    assert dataclasses.astuple(first.disk_cache.stats) == (0, _with_images(records), 0)

    calls = []
    original = Preprocessor.decode
    monkeypatch.setattr(Preprocessor, "decode", lambda self, paths: calls.append(paths) or original(self, paths))
    second = StudyDataset(records, _preprocessor(synthetic_tokenizer, train=train_flavour), cache_dir=tmp_path)
    assert second.disk_cache is not None
    assert dataclasses.astuple(second.disk_cache.stats) == (_with_images(records), 0, 0)
    for i in range(len(records)):  # the same random draws on the same heads: identical tensors
        a, b = memory[i].image, second[i].image
        assert (a is None and b is None) or torch.equal(a, b)
    assert calls == []  # no DICOM decoded: not at construction, not per access
    assert [(r.source, r.reason) for r in second.rejected] == [(r.source, r.reason) for r in memory.rejected]
    assert len(second.rejected) == 1  # the broken file, remembered with its reason


def test_a_changed_file_or_preprocessing_is_a_miss(
    synthetic_records: dict, synthetic_tokenizer: Any, tmp_path: Path
) -> None:
    records = _copy_records([r for r in synthetic_records["val"] if r.get("image")][:4], tmp_path / "files")
    StudyDataset(records, _preprocessor(synthetic_tokenizer), cache_dir=tmp_path / "cache")
    ds = pydicom.dcmread(records[0]["image"][0])
    ds.PixelData = np.full((ds.Rows, ds.Columns), 7, np.uint16).tobytes()
    ds.save_as(records[0]["image"][0])
    again = StudyDataset(records, _preprocessor(synthetic_tokenizer), cache_dir=tmp_path / "cache")
    assert again.disk_cache is not None and dataclasses.astuple(again.disk_cache.stats) == (3, 1, 0)
    assert float(again[0].image.std()) == 0.0  # the new pixels, not the cached old ones
    other_size = StudyDataset(
        records, _preprocessor(synthetic_tokenizer, image_size=(24, 24)), cache_dir=tmp_path / "cache"
    )
    assert other_size.disk_cache is not None and dataclasses.astuple(other_size.disk_cache.stats) == (0, 4, 0)
    assert other_size[1].image.shape == (1, 24, 24)


class _Planted:
    """Unpickling this would run code (creates the marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_corrupt_and_planted_entries_are_rebuilt_never_executed(
    synthetic_records: dict, synthetic_tokenizer: Any, tmp_path: Path
) -> None:
    records = [r for r in synthetic_records["val"] if r.get("image")][:3]
    reference = StudyDataset(records, _preprocessor(synthetic_tokenizer))
    first = StudyDataset(records, _preprocessor(synthetic_tokenizer), cache_dir=tmp_path / "cache")
    assert first.disk_cache is not None
    entries = sorted((tmp_path / "cache").rglob("*.pt"))
    assert len(entries) == 3
    entries[0].write_bytes(entries[0].read_bytes()[:100])  # truncated
    marker = tmp_path / "executed"
    entries[1].write_bytes(pickle.dumps(_Planted(marker)))
    again = StudyDataset(records, _preprocessor(synthetic_tokenizer), cache_dir=tmp_path / "cache")
    assert again.disk_cache is not None and dataclasses.astuple(again.disk_cache.stats) == (1, 2, 0)
    assert not marker.exists()
    for i in range(3):
        assert torch.equal(again[i].image, reference[i].image)


def test_concurrent_writers_leave_only_complete_entries(
    synthetic_records: dict, synthetic_tokenizer: Any, tmp_path: Path
) -> None:
    records = [r for r in synthetic_records["train"] if r.get("image")][:16]
    cache = tmp_path / "cache"
    built: list[StudyDataset] = []

    def build() -> None:
        built.append(StudyDataset(records, _preprocessor(synthetic_tokenizer), cache_dir=cache))

    threads = [threading.Thread(target=build) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 3
    assert not list(cache.rglob("*.tmp"))  # no temporary file left behind
    final = StudyDataset(records, _preprocessor(synthetic_tokenizer), cache_dir=cache)
    assert final.disk_cache is not None and final.disk_cache.stats.hits == len(records)  # a rejection too
    for i in range(len(records)):
        a, b = built[0][i].image, final[i].image
        assert (a is None and b is None) or torch.equal(a, b)


def test_training_reports_the_cache_hit_rate(synthetic_records: dict, tmp_path: Path) -> None:
    config = fast_config(epochs=1)
    config = config.model_copy(update={"data": config.data.model_copy(update={"cache_dir": tmp_path / "cache"})})
    with single_thread():
        cold = train(config, synthetic_records, tmp_path / "run1", progress=False)
        warm = train(config, synthetic_records, tmp_path / "run2", progress=False)
    assert cold.data_cache is not None and warm.data_cache is not None
    n = cold.data_cache.hits + cold.data_cache.misses
    assert cold.data_cache.hits == 0 and n > 0 and cold.data_cache.hit_rate == 0.0
    assert (warm.data_cache.hits, warm.data_cache.misses, warm.data_cache.hit_rate) == (n, 0, 1.0)
    assert warm.data_cache.as_metrics()["data_cache_hit_rate"] == 1.0
    assert warm.val_metrics == cold.val_metrics  # the same run, from the cache
    assert train(fast_config(epochs=1), synthetic_records, tmp_path / "run3", progress=False).data_cache is None
