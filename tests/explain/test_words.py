"""Word-level evidence: word pieces merged into report words, punctuation and special tokens in none,
negation scopes, and the sign they give."""

from __future__ import annotations

import numpy as np
import pytest

from medfusion.explain.text import token_spans
from medfusion.explain.words import negation_scopes, report_words, scale_rows, word_scores
from medfusion.models.tokenizer import train_wordpiece_tokenizer

REPORT = "FINDINGS: No pleural effusion. Small left-sided pneumothorax, 35 mm."


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    """A WordPiece vocabulary too small for whole clinical words: they split into pieces."""
    corpus = ["findings no small left sided mm the heart is normal"] * 5 + ["pleural effusion pneumothorax . , : -"]
    return train_wordpiece_tokenizer(corpus, 200, tmp_path_factory.mktemp("tok"), min_reports=2)


def test_word_pieces_merge_into_words_with_report_spans(tokenizer) -> None:
    spans = token_spans(tokenizer, REPORT, 128)
    pieces = tokenizer.convert_ids_to_tokens(tokenizer(REPORT)["input_ids"])
    assert any(p.startswith("##") for p in pieces)  # the vocabulary really splits words
    words = report_words(REPORT, spans)
    assert [w.text for w in words] == [
        "FINDINGS", "No", "pleural", "effusion", "Small", "left-sided", "pneumothorax", "35", "mm",
    ]  # fmt: skip
    for w in words:
        assert REPORT[w.span[0] : w.span[1]] == w.text
        for t in w.tokens:  # every piece of a word lies inside its span
            assert w.span[0] <= spans[t][0] < spans[t][1] <= w.span[1]
    in_words = {t for w in words for t in w.tokens}
    special = {t for t, (a, b) in enumerate(spans) if a == b}
    # "-" of "left-sided" belongs to its word
    punctuation = {t for t, (a, b) in enumerate(spans) if a < b and not REPORT[a:b].strip(".,:;")}
    assert special == {0, len(spans) - 1}  # [CLS], [SEP]
    assert not in_words & special and not in_words & punctuation  # never evidence
    assert in_words | special | punctuation == set(range(len(spans)))
    assert len(words[3].tokens) > 1  # "effusion" in pieces, one word


def test_words_cut_off_by_the_token_limit_are_left_out(tokenizer) -> None:
    spans = token_spans(tokenizer, REPORT, 8)  # [CLS] findings : no p ##l ##e [SEP]
    words = report_words(REPORT, spans)
    assert [w.text for w in words] == ["FINDINGS", "No", "pleural"]  # a word the model saw part of stays
    assert words[-1].tokens == (4, 5, 6)


def test_hyphenated_words_and_decimals_are_one_word() -> None:
    text = "x-ray: 3.5 cm, patient's."
    spans = [(0, 0)] + [(i, i + 1) for i in range(len(text))] + [(0, 0)]  # one token per character
    assert [w.text for w in report_words(text, spans)] == ["x-ray", "3.5", "cm", "patient's"]


@pytest.mark.parametrize(
    "text,denied",
    [
        ("No pleural effusion or pneumothorax. Small effusion.", ["pleural effusion or pneumothorax"]),
        ("Sharp angles without evidence of effusion.", ["effusion"]),
        ("Negative for pleural effusion.", ["pleural effusion"]),
        ("Effusion is not seen, but the heart is large.", ["Effusion"]),
        ("No effusion and no fracture.", ["effusion and", "fracture"]),
        ("The heart is enlarged.", []),
    ],
)
def test_negation_scopes(text: str, denied: list[str]) -> None:
    assert [text[a:b].strip() for a, b in negation_scopes(text)] == denied


def test_negated_words_are_evidence_against_and_the_rest_for(tokenizer) -> None:
    spans = token_spans(tokenizer, REPORT, 128)
    words = report_words(REPORT, spans)
    negated = {w.text for w in words if w.negated}
    assert negated == {"pleural", "effusion"}  # "No" is the trigger, not negated itself
    tokens = np.ones((2, len(spans)), np.float32)  # every token scores 1 for both labels
    tokens[1] *= 2
    scores = word_scores(tokens, words)
    effusion = [w.text for w in words].index("effusion")
    left = [w.text for w in words].index("left-sided")
    n_eff, n_left = len(words[effusion].tokens), len(words[left].tokens)
    peak = max(len(w.tokens) for w in words)
    assert scores[0, effusion] == pytest.approx(-n_eff / peak)  # summed pieces, signed, scaled to max |s| 1
    assert scores[0, left] == pytest.approx(n_left / peak)
    np.testing.assert_allclose(scores[0], scores[1])  # rows are scaled separately
    assert np.abs(scores).max() == pytest.approx(1.0)
    unsigned = word_scores(tokens, words, signed_by_negation=False)
    assert (unsigned > 0).all()


def test_scale_rows_keeps_zero_rows_and_signs() -> None:
    out = scale_rows(np.array([[0.0, 0.0], [-4.0, 2.0]]))
    np.testing.assert_allclose(out, [[0.0, 0.0], [-1.0, 0.5]])
