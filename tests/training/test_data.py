"""Study dataset and collate: caching, missing parts, rejected files, tokenization."""

from __future__ import annotations

from typing import Any

import torch

from medfusion.processing.preprocessor import Preprocessor, report_text
from medfusion.processing.sample import Collator
from medfusion.processing.spec import PreprocessingSpec
from medfusion.training.data import StudyDataset
from tests.support.synthetic import LABELS, fast_config


def _dataset(
    records: list[dict], tokenizer: Any, *, train: bool = False, cache: bool = True, **spec: Any
) -> StudyDataset:
    settings = PreprocessingSpec.from_config(fast_config()).model_copy(update=spec)
    return StudyDataset(records, Preprocessor(settings, tokenizer, len(LABELS), train=train, seed=0), cache=cache)


def test_cached_and_uncached_samples_agree(synthetic_records: dict, synthetic_tokenizer) -> None:
    records = synthetic_records["val"][:6]
    cached, fresh = _dataset(records, synthetic_tokenizer), _dataset(records, synthetic_tokenizer, cache=False)
    for i in range(len(records)):
        assert torch.equal(cached[i].image, fresh[i].image)
        assert cached[i].image.shape == (1, 32, 32)


def test_training_augmentation_runs_after_the_cache(synthetic_records: dict, synthetic_tokenizer) -> None:
    dataset = _dataset(synthetic_records["val"][:4], synthetic_tokenizer, train=True)
    draws = [dataset[0].image for _ in range(6)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])  # RandAffine (p=0.5) applied per access


def test_missing_parts_and_rejections(synthetic_records: dict, synthetic_tokenizer) -> None:
    records = synthetic_records["train"][:12]  # 5: no report, 7: no image, 9: broken file
    dataset = _dataset(records, synthetic_tokenizer)
    assert [r.source.endswith("broken.dcm") for r in dataset.rejected] == [True]
    assert dataset[5].text_present is False and dataset[5].report == ""
    assert dataset[7].image is None and dataset[7].image_present is False
    assert dataset[9].image is None
    assert torch.isnan(dataset[9].label[0])
    wrong = _dataset(records[:2], synthetic_tokenizer, in_channels=3)
    assert len(wrong.rejected) == 2 and "expects 3" in wrong.rejected[0].reason


def test_collate_pads_to_longest_and_truncates(synthetic_records: dict, synthetic_tokenizer) -> None:
    dataset = _dataset(synthetic_records["train"][:12], synthetic_tokenizer, max_tokens=8)
    collate = Collator.for_tokenizer(synthetic_tokenizer, image_shape=(1, 32, 32))
    batch = collate([dataset[i] for i in (0, 5, 7)])
    assert batch["image"].shape == (3, 1, 32, 32)
    assert batch["image_present"].tolist() == [True, True, False]
    assert torch.all(batch["image"][2] == 0)
    assert batch["text_present"].tolist() == [True, False, True]
    assert batch["input_ids"].shape == (3, 8)  # truncated to max_tokens
    assert batch["attention_mask"][1].sum() == 2  # empty report: [CLS] [SEP] only, the rest padding
    assert batch["label"].shape == (3, 3)
    no_images = collate([dataset[7]])
    assert no_images["image"].shape == (1, 1, 32, 32)


def test_report_sections_are_selected_without_changing_case() -> None:
    report = "INDICATION: Fever.\nFINDINGS: Small LEFT effusion.\nIMPRESSION: Effusion."
    assert report_text(report, ["findings"]) == "Small LEFT effusion."
    assert report_text(report, ["full"]) == report
    assert report_text("   ", ["full"]) == ""
