"""Every config shipped with hardmine loads and validates."""

from importlib import resources
from pathlib import Path

import pytest
import yaml

from hardmine.config import load_config

SHIPPED = sorted(Path(str(resources.files("hardmine") / "configs")).glob("*.yaml"))


def test_configs_are_shipped():
    assert [p.name for p in SHIPPED] == ["demo.yaml"]


@pytest.fixture
def fusion(tmp_path):
    for name in ("t", "s"):
        (tmp_path / f"{name}.jsonl").write_text("")
    spec = {"target": {"name": "t", "train_jsonl": "t.jsonl"}, "sources": [{"name": "s", "train_jsonl": "s.jsonl", "ratio": 0.5}]}
    path = tmp_path / "fusion.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_config_validates(path, fusion, tmp_path):
    from hardmine.recipe.run import CHECKS

    cfg = load_config(path, [f"custom.fusion_config={fusion}", f"training.output_dir={tmp_path}"], checks=CHECKS)
    assert cfg.custom.fusion_config == str(fusion)
