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


def test_a_wrong_description_keeps_the_colour_group_and_changes_colour_and_shape():
    rng = np.random.default_rng(0)
    for desc in ("red square", "purple line", "cyan triangle", "yellow pentagon"):
        group = next(g for g in quality.COLOUR_GROUPS if desc.split(" ")[0] in g)
        for _ in range(20):
            colour, shape = quality.wrong_description(desc, rng).split(" ")
            assert colour in group and colour != desc.split(" ")[0] and shape != desc.split(" ")[1]
