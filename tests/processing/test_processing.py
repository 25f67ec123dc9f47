"""The preprocessing contract: spec <-> JSON, one Preprocessor (typed errors, channel check), Collator, Sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medfusion.config import Config
from medfusion.datasets.demo.dicom_writer import DicomSpec, write_dicom
from medfusion.errors import InputRejected, MedfusionError
from medfusion.models.tokenizer import train_wordpiece_tokenizer
from medfusion.processing.preprocessor import Preprocessor
from medfusion.processing.sample import Collator, Sample, StudyInput
from medfusion.processing.spec import PreprocessingSpec

REPORTS = [
    "INDICATION: Fever.\nFINDINGS: Small LEFT pleural effusion. No pneumothorax.\nIMPRESSION: Effusion.",
    "FINDINGS: The lungs are clear.",
    "",
    "FINDINGS: Heart size normal. Mild degenerative change of the thoracic spine. Lines unchanged since the prior.",
]
SPEC = PreprocessingSpec(image_size=(16, 16), max_tokens=12, report_sections=("findings",))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return train_wordpiece_tokenizer([r for r in REPORTS if r], 80, tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("dicom")
    rng = np.random.default_rng(0)
    uids = {"study_uid": "1.2.3", "series_uid": "1.2.3.1"}
    gray = write_dicom(root / "gray.dcm", rng.integers(0, 4000, (24, 20)).astype(np.uint16), DicomSpec(**uids))
    rgb = write_dicom(
        root / "rgb.dcm",
        rng.integers(0, 255, (24, 20, 3)).astype(np.uint8),
        DicomSpec(**uids, photometric="RGB", bits_stored=8),
    )
    broken = root / "broken.dcm"
    broken.write_text("not a DICOM file")
    return {"gray": str(gray), "rgb": str(rgb), "broken": str(broken)}


def test_spec_round_trips_through_json_and_is_frozen() -> None:
    config = Config(
        labels=["a"],
        data={
            "image_size": [48, 40],
            "frame_policy": "mean",
            "max_tokens": 20,
            "report_sections": ["findings", "impression"],
        },
    )
    spec = PreprocessingSpec.from_config(config)
    assert spec.image_size == (48, 40) and spec.image_shape == (1, 48, 40)
    assert spec.report_sections == ("findings", "impression") and spec.frame_policy == "mean"
    assert PreprocessingSpec.from_json(spec.to_json()) == spec
    assert spec.to_dict()["image_size"] == [48, 40]  # the JSON layout of medfusion_model.json
    with pytest.raises(ValueError):
        spec.max_tokens = 3  # type: ignore[misc]
    with pytest.raises(MedfusionError, match="frame_policy"):
        PreprocessingSpec.from_dict({**spec.to_dict(), "frame_policy": "last"})
    with pytest.raises(MedfusionError, match="not JSON"):
        PreprocessingSpec.from_json("{")


def test_collator_batches_exactly_as_the_tokenizer_would(tokenizer) -> None:
    """Per-sample tokens padded by the Collator == the tokenizer's own padded batch (ids and mask)."""
    preprocess = Preprocessor(SPEC, tokenizer, 2, uses_image=False)
    samples = [preprocess(StudyInput(report_text=r)) for r in REPORTS]
    batch = Collator.for_tokenizer(tokenizer, SPEC.image_shape)(samples)
    texts = [s.report for s in samples]
    expected = tokenizer(texts, padding="longest", truncation=True, max_length=SPEC.max_tokens, return_tensors="pt")
    assert torch.equal(batch["input_ids"], expected["input_ids"])
    assert torch.equal(batch["attention_mask"], expected["attention_mask"])
    assert batch["input_ids"].shape[1] == SPEC.max_tokens  # the long report is truncated
    assert texts[0] == "Small LEFT pleural effusion. No pneumothorax."  # findings only, casing untouched
    assert batch["text_present"].tolist() == [True, True, False, True]
    assert batch["image"].shape == (4, 1, 16, 16) and not batch["image_present"].any()
    assert torch.isnan(batch["label"]).all() and batch["label"].shape == (4, 2)


def test_preprocessor_rejects_unreadable_and_wrong_channel_images_with_typed_errors(tokenizer, images) -> None:
    preprocess = Preprocessor(SPEC, tokenizer, 2)
    sample = preprocess(StudyInput([images["gray"]], REPORTS[0], study_uid="1.2.3"))
    assert sample.image.shape == (1, 16, 16) and sample.image.dtype == torch.float32 and sample.study_uid == "1.2.3"
    assert abs(float(sample.image.mean())) < 1e-5  # z-scored
    with pytest.raises(InputRejected) as broken:  # not MONAI's RuntimeError wrapper
        preprocess(StudyInput([images["broken"]], REPORTS[0]))
    assert broken.value.source == images["broken"] and "not a DICOM file" in broken.value.reason
    three = Preprocessor(SPEC.model_copy(update={"in_channels": 3}), tokenizer, 2)
    with pytest.raises(InputRejected, match="image has 1 channels, the model expects 3") as wrong:
        three(StudyInput([images["gray"]], ""))
    assert wrong.value.source == images["gray"]
    assert preprocess(StudyInput([images["rgb"]], "")).image.shape == (1, 16, 16)  # colour -> luminance
    text_only = Preprocessor(SPEC, tokenizer, 2, uses_image=False)
    assert text_only(StudyInput([images["broken"]], REPORTS[1])).image is None  # never decoded


def test_decode_then_finish_is_the_whole_chain(tokenizer, images) -> None:
    preprocess = Preprocessor(SPEC, tokenizer, 2)
    decoded = preprocess.decode([images["gray"]])
    assert decoded.final and preprocess.cacheable
    assert torch.equal(preprocess.finish(decoded), preprocess.image([images["gray"]]))
    train = Preprocessor(SPEC, tokenizer, 2, train=True, seed=0)
    head = train.decode([images["gray"]])
    assert not head.final  # the random augmentation runs in finish(), every time
    draws = [train.finish(head) for _ in range(6)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])


@pytest.mark.parametrize("with_image, uid", [(True, "1.2.840.1"), (False, None)])
def test_sample_bytes_round_trip(with_image: bool, uid: str | None) -> None:
    sample = Sample(
        image=torch.randn(1, 8, 6) if with_image else None,
        input_ids=torch.tensor([2, 17, 9, 3]),
        report="Effusion ünïcode.",
        label=torch.tensor([1.0, float("nan")]),
        study_uid=uid,
    )
    back = Sample.from_bytes(sample.to_bytes())
    assert (back.image is None) == (not with_image)
    if with_image:
        assert torch.equal(back.image, sample.image)
    assert torch.equal(back.input_ids, sample.input_ids) and back.input_ids.dtype == torch.long
    assert torch.allclose(back.label, sample.label, equal_nan=True)
    assert back.report == sample.report and back.study_uid == uid


def test_collator_needs_a_padding_token() -> None:
    class NoPad:
        pad_token_id = None
        padding_side = "right"

    with pytest.raises(MedfusionError, match="no padding token"):
        Collator.for_tokenizer(NoPad(), (1, 8, 8))
    with pytest.raises(MedfusionError, match="empty batch"):
        Collator(0, (1, 8, 8))([])


def test_path_objects_are_accepted(tokenizer, images) -> None:
    preprocess = Preprocessor(SPEC, tokenizer, 1)
    assert preprocess(StudyInput([Path(images["gray"])], "")).image is not None  # type: ignore[list-item]
