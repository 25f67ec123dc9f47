"""Fixtures of the model tests: a tiny offline text stack (helpers: :mod:`tests.support.text`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.text import write_tiny_text_dir


@pytest.fixture(scope="session")
def text_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face folder holding a trained tokenizer and a tiny BERT, as training writes it."""
    return write_tiny_text_dir(tmp_path_factory.mktemp("tiny_bert"))
