"""The README is a front page: at most 200 lines, no paragraph over 120 words (its generated one included)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def paragraphs(text: str) -> list[str]:
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return [p for p in re.split(r"\n\s*\n|\n(?=- )", text) if p.strip()]


def test_the_readme_is_a_front_page():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    long = [(len(p.split()), p[:60]) for p in paragraphs(text) if len(p.split()) > 120]
    assert not long, long
