import json

import numpy as np
import pytest

from hardmine.core import DUMP_FORMAT, HardSamplePlan, dump_filename, sample_id
from hardmine.core.audit import SampleCatalog


def make_plan(**kw):
    base = dict(
        epoch=4, version=2, hard_weight=3.0, mode="percentile", params={"value": 0.1},
        base_idx={"target": np.array([7, 2])}, losses={"target": np.array([1.5, 2.5])},
    )
    base.update(kw)
    return HardSamplePlan(**base)


def test_weights():
    w = make_plan().weights("target", 10)
    assert w.tolist() == [1, 1, 3, 1, 1, 1, 1, 3, 1, 1]
    assert make_plan().weights("coco", 3).tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="has 5 samples"):
        make_plan().weights("target", 5)


def test_dump_file_fields(tmp_path):
    path = make_plan().dump(tmp_path)
    assert path.name == dump_filename(4) == "hard_samples_epoch_4.json"
    data = json.loads(path.read_text())
    assert data["format"] == DUMP_FORMAT
    assert data["epoch"] == 4 and data["version"] == 2 and data["num_hard"] == 2
    assert data["selection"] == {"mode": "percentile", "params": {"value": 0.1}}
    assert data["weights"] == {"hard": 3.0, "min": 1.0, "max": 3.0}
    assert data["samples"] == [
        {"sample_id": sample_id("target", 2), "dataset": "target", "base_idx": 2, "loss": 2.5, "weight": 3.0},
        {"sample_id": sample_id("target", 7), "dataset": "target", "base_idx": 7, "loss": 1.5, "weight": 3.0},
    ]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


def test_dump_rows_say_where_each_sample_lives_and_what_the_decision_used(tmp_path):
    catalog = SampleCatalog(
        source="/data/train.jsonl",
        lines=list(range(2, 12)),  # line 1 was blank
        images=[(f"/data/img/{i}.png",) for i in range(10)],
        slices=["hard" if i in (2, 3) else "easy" for i in range(10)],
    )
    stats = {"target": {"last_loss": np.array([1.75, float("nan")]), "count": np.array([4, 2])}}
    extra = {"decision": {"monitored": 0.7}, "population": None}
    data = json.loads(make_plan().dump(tmp_path, sample_stats=stats, catalogs={"target": catalog}, extra=extra).read_text())
    assert data["decision"] == {"monitored": 0.7} and data["population"] is None
    worst, second = data["samples"]
    assert worst == {
        "sample_id": sample_id("target", 2), "dataset": "target", "base_idx": 2, "loss": 2.5,
        "last_loss": None, "count": 2, "weight": 3.0,  # NaN is written as null: the file stays strict JSON
        "source": "/data/train.jsonl", "line": 4, "images": ["/data/img/2.png"], "slice": "hard",
    }
    assert second["base_idx"] == 7 and second["line"] == 9 and second["last_loss"] == 1.75 and second["slice"] == "easy"
    assert catalog.slice_counts() == {"easy": 8, "hard": 2}


def test_a_dump_of_an_earlier_format_is_refused_by_name(tmp_path):
    old = tmp_path / "hard_samples_epoch_3.json"
    old.write_text(json.dumps({
        "format": "hardmine.hard_samples/1", "epoch": 3, "version": 1,
        "selection": {"mode": "top_k", "params": {"k": 1}}, "weights": {"hard": 2.0, "min": 1.0, "max": 2.0},
        "num_hard": 1, "samples": [{"sample_id": sample_id("target", 5), "dataset": "target", "base_idx": 5, "loss": 1.0}],
    }))
    with pytest.raises(ValueError, match="hardmine.hard_samples/1', written by an earlier hardmine; this version reads only"):
        HardSamplePlan.load(old)


def test_dump_round_trip_and_empty_plan(tmp_path):
    plan = make_plan()
    again = HardSamplePlan.load(plan.dump(tmp_path))
    assert again.base_idx["target"].tolist() == [2, 7] and again.hard_weight == 3.0
    empty = make_plan(base_idx={}, losses={})
    assert empty.weight_range() == (1.0, 1.0)
    assert json.loads(empty.dump(tmp_path).read_text())["weights"]["max"] == 1.0


def test_load_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{\n  nope")
    with pytest.raises(ValueError, match=r"bad.json:2: not valid JSON"):
        HardSamplePlan.load(bad)
    other = tmp_path / "other.json"
    other.write_text('{"format": "something"}')
    with pytest.raises(ValueError, match="other.json: not a hardmine hard-sample dump"):
        HardSamplePlan.load(other)
    cut = tmp_path / "cut.json"
    cut.write_text(json.dumps({"format": DUMP_FORMAT, "epoch": 1}))
    with pytest.raises(ValueError, match="cut.json: not a complete hard-sample dump"):
        HardSamplePlan.load(cut)


def test_invalid_plans():
    with pytest.raises(ValueError, match="hard_weight"):
        make_plan(hard_weight=0.5)
    with pytest.raises(ValueError, match="more than once"):
        make_plan(base_idx={"target": np.array([1, 1])}, losses={"target": np.array([1.0, 1.0])})


def test_state_round_trip():
    plan = make_plan()
    again = HardSamplePlan.from_state_dict(plan.state_dict())
    assert again.to_json_dict() == plan.to_json_dict()
