"""Offline text stack: a WordPiece vocabulary built from the cohort's reports and a tiny BERT.

Both are saved as a standard Hugging Face folder (``tokenizer.json``, ``tokenizer_config.json``,
``config.json``, ``model.safetensors``), so :class:`~medfusion.models.text_encoder.TextEncoder` loads
the tiny model through exactly the same ``from_pretrained(path)`` code as a real biomedical BERT.

Casing is decided here, once, and saved: ``do_lower_case`` in ``tokenizer_config.json`` (and the
``BertNormalizer`` in ``tokenizer.json``). Nothing else in medfusion lower-cases text.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, BertModel, BertTokenizer

from medfusion.config import TinyBertConfig
from medfusion.errors import MedfusionError

log = logging.getLogger(__name__)

#: Special tokens, in id order (``[PAD]`` is 0 as in BERT).
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
#: Longest token sequence the tiny BERT accepts.
TINY_MAX_POSITIONS = 512


def wordpiece_vocabulary(
    texts: Sequence[str], vocab_size: int, *, lowercase: bool = True, min_reports: int = 1
) -> list[str]:
    """A deterministic WordPiece vocabulary: special tokens, every character (as ``c`` and ``##c``),
    then whole words by decreasing frequency (ties alphabetical) up to ``vocab_size``.

    Words are cut exactly as the tokenizer will cut them (``BertNormalizer`` then ``BertPreTokenizer``).
    Any word still tokenizes: unknown words fall back to known words' characters. The ``tokenizers``
    ``WordPieceTrainer`` is not used because its tie-breaking follows Rust hash-map order, which changes
    from process to process: the same reports would give different vocabularies and ids, and training
    would not be reproducible.

    Whole words found in fewer than ``min_reports`` texts are left out (they still tokenize, by
    character): the vocabulary is saved with the model, and a word that only one patient's reports
    contain (a name, an ID) must not be.
    """
    normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    splitter = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    reports: Counter[str] = Counter()
    for text in texts:
        words = [word for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text))]
        counts.update(words)
        reports.update(set(words))
    chars = sorted({c for word in counts for c in word})
    vocab = SPECIAL_TOKENS + chars + [f"##{c}" for c in chars]
    if len(vocab) > vocab_size:
        log.warning(
            "vocab_size %d is smaller than the alphabet (%d tokens); keeping the alphabet", vocab_size, len(vocab)
        )
    words = sorted((w for w in counts if len(w) > 1 and reports[w] >= min_reports), key=lambda w: (-counts[w], w))
    return vocab + words[: max(0, vocab_size - len(vocab))]


def train_wordpiece_tokenizer(
    texts: Iterable[str], vocab_size: int, out_dir: str | Path, *, lowercase: bool = True, min_reports: int = 1
) -> BertTokenizer:
    """Build a BERT WordPiece tokenizer for ``texts`` and save it as a Hugging Face tokenizer folder.

    ``tokenizers`` pipeline: ``BertNormalizer`` (lower-casing per ``lowercase``), ``BertPreTokenizer``,
    a ``WordPiece`` model over :func:`wordpiece_vocabulary`, ``[CLS] x [SEP]`` template. The same texts
    always give the same vocabulary and ids.

    Args:
        texts: Training texts (the train split's reports only, never validation or test).
        vocab_size: Upper bound on the vocabulary, special tokens included (a small corpus may give fewer).
        out_dir: Folder to write ``tokenizer.json`` and ``tokenizer_config.json`` to (created).
        lowercase: Whether the tokenizer lower-cases its input; saved as ``do_lower_case``.
        min_reports: Whole words in fewer texts stay out of the vocabulary (see :func:`wordpiece_vocabulary`).

    Returns:
        The tokenizer (``[PAD]`` = 0, ``[UNK]`` = 1, ``[CLS]`` = 2, ``[SEP]`` = 3, ``[MASK]`` = 4).

    Raises:
        MedfusionError: ``texts`` holds no non-empty text.
    """
    corpus = [t for t in texts if t and t.strip()]
    if not corpus:
        raise MedfusionError("cannot build a WordPiece vocabulary: no non-empty report text in the training split")
    vocab = wordpiece_vocabulary(corpus, vocab_size, lowercase=lowercase, min_reports=min_reports)
    return _save_tokenizer(vocab, out_dir, lowercase)


def special_tokens_tokenizer(out_dir: str | Path, *, lowercase: bool = True) -> BertTokenizer:
    """A tokenizer of the special tokens only (any word is ``[UNK]``), saved like :func:`train_wordpiece_tokenizer`.

    For runs that read no text (image-only fusion): the model folder keeps its usual layout, and no word
    of any report is learned or saved.
    """
    return _save_tokenizer(list(SPECIAL_TOKENS), out_dir, lowercase)


def _save_tokenizer(vocab: list[str], out_dir: str | Path, lowercase: bool) -> BertTokenizer:
    """The WordPiece tokenizer over ``vocab`` (special tokens first), saved to ``out_dir``."""
    backend = Tokenizer(models.WordPiece(vocab={t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tokenizer = BertTokenizer(  # the tokenizers-backed class (transformers 5 names it BertTokenizer)
        tokenizer_object=backend, do_lower_case=lowercase, model_max_length=TINY_MAX_POSITIONS
    )
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def build_tiny_bert(tokenizer: BertTokenizer, cfg: TinyBertConfig) -> BertModel:
    """A randomly initialised small BERT sized to ``tokenizer``'s vocabulary.

    The caller saves it with ``save_pretrained`` next to the tokenizer; training then loads it from
    that folder like any pretrained model.

    Args:
        tokenizer: The tokenizer whose vocabulary the embeddings cover.
        cfg: Sizes (hidden 32, 2 layers, ... by default).
    """
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=TINY_MAX_POSITIONS,
        pad_token_id=tokenizer.pad_token_id,
    )
    return BertModel(config)
