"""Every YAML block of the README and the docs pages is a config (or fusion file) hardmine reads."""

import re
from pathlib import Path

import pytest
import yaml

from hardmine.config import load_config
from hardmine.config.fusion import FusionSpec
from hardmine.config.load import parse_yaml

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted(p for p in (REPO / "docs").glob("*.md") if p.name != "benchmarks.md")]


def yaml_blocks():
    for page in PAGES:
        for i, block in enumerate(re.findall(r"^```yaml\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M)):
            yield pytest.param(block, id=f"{page.relative_to(REPO)}#{i}")


@pytest.mark.parametrize("block", list(yaml_blocks()))
def test_every_yaml_block_is_read_by_hardmine(block, tmp_path):
    tree = parse_yaml(block)
    if "target" in tree:  # a fusion file
        FusionSpec.model_validate(tree)
        return
    tree.pop("extends", None)  # a file of its own, not shown
    for key, value in (tree.get("custom") or {}).items():  # the files it names exist (their contents are the reader's)
        if key.endswith("_jsonl") and isinstance(value, str):
            (tmp_path / value).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / value).touch()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    load_config(path)  # the schema, every training key and every mining key


def test_the_pages_hold_yaml_blocks():
    assert len(list(yaml_blocks())) >= 3
