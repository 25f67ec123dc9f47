"""Fixtures of the training tests (the synthetic cohort and its trained model are session fixtures of
``tests/conftest.py``; the helpers are in :mod:`tests.support.synthetic`)."""

from __future__ import annotations

import pytest
from transformers import BertTokenizerFast

from medfusion.models.tokenizer import train_wordpiece_tokenizer
from tests.support.synthetic import Record


@pytest.fixture(scope="session")
def synthetic_tokenizer(
    synthetic_records: dict[str, list[Record]], tmp_path_factory: pytest.TempPathFactory
) -> BertTokenizerFast:
    """A tokenizer built from the synthetic train reports."""
    return train_wordpiece_tokenizer(
        [r["report"] for r in synthetic_records["train"]], 200, tmp_path_factory.mktemp("tok")
    )
