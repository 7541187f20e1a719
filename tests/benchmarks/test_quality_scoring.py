"""The quality benchmark finds each object's description words in a rendered caption's tokens."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import quality  # noqa: E402


class PieceTokenizer:
    """Decodes a token id to a fixed piece of text, as a real tokenizer decodes one token."""

    def __init__(self, pieces):
        self.pieces = pieces

    def decode(self, ids):
        return "".join(self.pieces[i] for i in ids)


PIECES = ['[{"desc":"', "pur", "ple", " square", '","bbox_2d":[', "12", ",", "40", ']},{"desc":"', "red", " line", '"}]']


def test_description_spans_mark_the_tokens_of_each_objects_words():
    spans = quality.description_spans(list(range(len(PIECES))), PieceTokenizer(PIECES))
    assert [np.flatnonzero(s).tolist() for s in spans] == [[1, 2, 3], [9, 10]]


def test_description_hits_count_objects_whose_every_word_token_is_right():
    correct = np.ones(len(PIECES), dtype=bool)
    correct[2] = False  # "ple" of "purple" wrong; a wrong coordinate (7) does not count
    correct[7] = False
    assert quality.description_hits(list(range(len(PIECES))), correct, PieceTokenizer(PIECES)) == (1, 2)
