"""A real chest radiograph in four encodings (pydicom-data's RG1) through the image pipeline and a model.

RG1 is a computed radiograph of the chest, PA, 1955 x 1841, 15 bits stored, MONOCHROME1, stored as:
``UNCR`` uncompressed original, ``J2KR`` JPEG 2000 lossless, ``J2KI`` JPEG 2000 lossy (10:1) and ``UNCI``
the lossy result stored uncompressed. Codec tolerance, on the display-ready pixels in [0, 1] that
:func:`~medfusion.ingest.dicom.read.read_dicom` returns:

* lossless (``J2KR``) and the lossy file against its own uncompressed decompression (``UNCI``):
  identical, bit for bit;
* lossy against the original: at most :data:`LOSSY_MAX_ABS` per pixel, :data:`LOSSY_MAX_MEAN` on
  average, PSNR at least :data:`LOSSY_MIN_PSNR_DB` (measured: 0.0134, 0.0017, 53.5 dB).

Then a tiny model, trained in seconds on the synthetic cohort of ``tests/training``, scores every
encoding end to end through :class:`medfusion.inference.Predictor`. Skips without pydicom-data.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from medfusion.datasets.assets import RG1_ENCODINGS, find_pydicom_data_files
from medfusion.inference import STATUS, Predictor, StudyInput
from medfusion.ingest.dicom.read import read_dicom
from medfusion.processing.preprocessor import Preprocessor
from medfusion.processing.spec import PreprocessingSpec
from tests.support.synthetic import fast_config

FILES = find_pydicom_data_files()
pytestmark = pytest.mark.skipif(
    FILES is None, reason="pydicom-data not installed: pip install pydicom-data==1.0.0 (pip install -e '.[real-data]')"
)

LOSSY_MAX_ABS = 0.02
LOSSY_MAX_MEAN = 0.003
LOSSY_MIN_PSNR_DB = 45.0
#: Largest difference in probability between the original and the lossy file after 32x32 resizing.
LOSSY_MAX_PROB_DIFF = 0.02
#: The reduced-level JPEG 2000 decode's bound (``tests/ingest/test_reduced_decode.py``), z-scored units.
REDUCED_MAX_ABS = 1.0
REDUCED_MAX_MEAN = 0.08
REPORT = "FINDINGS: The heart size is normal. The lungs are clear.\nIMPRESSION: No acute disease."


@pytest.fixture(scope="module")
def decoded():
    return {code: read_dicom(path) for code, path in FILES.items()}


def test_every_encoding_is_the_same_radiograph(decoded) -> None:
    assert set(decoded) == set(RG1_ENCODINGS)
    for code, image in decoded.items():
        m = image.meta
        assert tuple(image.pixels.shape) == (1, 1, 1955, 1841), code
        assert image.pixels.dtype == torch.float32 and bool(torch.isfinite(image.pixels).all()), code
        assert float(image.pixels.min()) >= 0.0 and float(image.pixels.max()) <= 1.0, code
        assert (m["modality"], m["body_part"], m["photometric_interpretation"], m["bits_stored"]) == (
            "CR",
            "CHEST",
            "MONOCHROME1",
            15,
        ), code
        assert m["window"] == (15000.0, 30000.0) and m["voi"] == "window", code
    assert len({image.meta["study_uid"] for image in decoded.values()}) == 1
    assert {image.meta["transfer_syntax"] for image in decoded.values()} == {
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
    }


def test_lossless_decodes_identically(decoded) -> None:
    assert torch.equal(decoded["J2KR"].pixels, decoded["UNCR"].pixels)
    assert torch.equal(decoded["J2KI"].pixels, decoded["UNCI"].pixels)  # our decoder = the reference decompression


def test_lossy_within_codec_tolerance(decoded) -> None:
    original, lossy = decoded["UNCR"].pixels.double(), decoded["J2KI"].pixels.double()
    diff = (lossy - original).abs()
    assert 0 < float(diff.max()) <= LOSSY_MAX_ABS
    assert float(diff.mean()) <= LOSSY_MAX_MEAN
    psnr = 10 * math.log10(1.0 / float(((lossy - original) ** 2).mean()))
    assert psnr >= LOSSY_MIN_PSNR_DB


def test_image_transform_output_agrees(decoded, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoded in full, every encoding gives the model the same input (lossless: identical); by default
    JPEG 2000 is decoded at a reduced level, within the bound of ``tests/ingest/test_reduced_decode.py``."""
    preprocessor = Preprocessor(PreprocessingSpec.from_config(fast_config()), tokenizer=None, n_labels=0)  # images only
    out = {code: preprocessor.image([str(path)]) for code, path in FILES.items()}
    assert all(tuple(x.shape) == (1, 32, 32) for x in out.values())
    for lossless, reference in (("J2KR", "UNCR"), ("J2KI", "UNCI")):
        diff = (out[lossless] - out[reference]).abs()
        assert float(diff.max()) <= REDUCED_MAX_ABS and float(diff.mean()) <= REDUCED_MAX_MEAN
    monkeypatch.setenv("MEDFUSION_REDUCED_DECODE", "0")
    full = {code: preprocessor.image([str(path)]) for code, path in FILES.items()}
    assert torch.equal(full["J2KR"], full["UNCR"]) and torch.equal(full["J2KI"], full["UNCI"])
    assert float((full["J2KI"] - full["UNCR"]).abs().max()) <= LOSSY_MAX_ABS


@pytest.fixture(scope="module")
def predictor(tiny_model_dir: Path) -> Predictor:
    """A tiny hybrid model (ViT 32x32 + tiny BERT) trained on the synthetic cohort."""
    return Predictor.from_dir(tiny_model_dir, device="cpu")


def test_tiny_model_scores_every_encoding_end_to_end(predictor: Predictor) -> None:
    codes = list(FILES)
    studies = [StudyInput(image_paths=[str(FILES[c])], report_text=REPORT) for c in codes]
    studies.append(StudyInput(image_paths=[str(FILES["UNCR"])], report_text=""))  # image only
    predictions = predictor.predict(studies)
    assert len(predictions) == len(codes) + 1
    for p in predictions:
        assert p.error is None
        assert p.image_present and p.labels == predictor.labels
        assert np.all(np.isfinite(p.probabilities)) and np.all((p.probabilities >= 0) & (p.probabilities <= 1))
        assert p.decisions.dtype == bool and p.decisions.shape == p.probabilities.shape
        assert p.provenance["status"] == STATUS
    by_code = dict(zip(codes, predictions, strict=False))  # the last prediction is the text-only study
    assert by_code["UNCR"].text_present and not predictions[-1].text_present
    # JPEG 2000 is decoded at a reduced resolution level (the uncompressed files in full)
    for j2k, reference in (("J2KR", "UNCR"), ("J2KI", "UNCI")):
        assert np.abs(by_code[j2k].probabilities - by_code[reference].probabilities).max() <= LOSSY_MAX_PROB_DIFF
    assert np.abs(by_code["J2KI"].probabilities - by_code["UNCR"].probabilities).max() <= LOSSY_MAX_PROB_DIFF
