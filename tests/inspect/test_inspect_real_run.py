"""``hardmine inspect`` on a real tiny run: every flag, the dumps it reads, the logs it relies on."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hardmine.core.audit import read_population, recompute_selection
from hardmine.inspect.run import latest_trainer_state

pytestmark = pytest.mark.integration


def dumps_of(run):
    return {int(p.stem.split("_")[-1]): json.loads(p.read_text()) for p in sorted(run.glob("hard_samples_epoch_*.json"))}


def test_dump_rows_name_file_line_and_image_of_each_sample(tiny_runs):
    dumps = dumps_of(tiny_runs["mined"])
    assert sorted(dumps) == [1, 2]
    for epoch, dump in dumps.items():
        assert dump["format"] == "hardmine.hard_samples/2" and dump["num_hard"] > 0
        assert dump["datasets"]["target"]["size"] == 48
        assert sum(dump["datasets"]["target"]["slices"].values()) == 48
        for row in dump["samples"]:
            record = json.loads(Path(row["source"]).read_text().splitlines()[row["line"] - 1])
            # The named line is the sample's record: its image is the row's image.
            assert row["images"][0].endswith(record["images"][0].split("/")[-1])
            assert row["slice"] == record["metadata"]["slice"]
            assert row["count"] >= 1 and row["weight"] == 3.0 and np.isfinite(row["last_loss"])


def test_the_selection_is_recomputed_from_the_population_file(tiny_runs):
    run = tiny_runs["mined"]
    for epoch, dump in dumps_of(run).items():
        population = read_population(run / dump["population"])
        chosen = recompute_selection(population)
        hard = {r["base_idx"] for r in dump["samples"]}
        assert set(population.columns["base_idx"][chosen].tolist()) == hard
        assert int(population.columns["eligible"].sum()) == dump["decision"]["eligible"]


def test_every_hsm_row_carries_the_dump_epoch_and_active_rows_the_selection_mode(tiny_runs):
    state = json.loads(latest_trainer_state(tiny_runs["mined"]).read_text())
    rows = [r for r in state["log_history"] if any(k.startswith("hsm/") for k in r)]
    assert [r["hsm/epoch"] for r in rows] == [0.0, 1.0, 2.0]
    assert [r["epoch"] for r in rows] == [1.0, 2.0, 3.0]  # Trainer's count is the dump's + 1
    assert [r.get("hsm/selection_mode") for r in rows] == [None, "percentile", "percentile"]
    log = [json.loads(line) for line in (tiny_runs["mined"] / "hard_samples_epochs.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["selection_mode"]) for r in log] == [(0, None), (1, "percentile"), (2, "percentile")]


def test_tensorboard_has_the_loss_histograms_of_each_mining_epoch(tiny_runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tiny_runs["logging_dir"]), size_guidance={"histograms": 0})
    events.Reload()
    tags = events.Tags()["histograms"]
    assert {"hsm/aggregated_loss_target", "hsm/aggregated_loss_hard"} <= set(tags)
    assert "hsm/selection_mode/text_summary" in events.Tags()["tensors"]  # the mode, once, as text
    assert "hsm/selection_mode" not in events.Tags()["scalars"]
    target = events.Histograms("hsm/aggregated_loss_target")
    hard = events.Histograms("hsm/aggregated_loss_hard")
    assert len(target) == len(hard) == 2  # epochs 1 and 2
    dumps = dumps_of(tiny_runs["mined"])
    assert [h.histogram_value.num for h in hard] == [dumps[1]["num_hard"], dumps[2]["num_hard"]]
    assert [h.histogram_value.num for h in target] == [dumps[1]["decision"]["observed"], dumps[2]["decision"]["observed"]]
    assert "train/hsm/epoch" in events.Tags()["scalars"]  # the scalars beside them


def test_json_matches_the_dumps(tiny_runs, cli):
    rc, out, err = cli("inspect", tiny_runs["mined"], "--json", "--top", 3)
    assert rc == 0 and err == ""
    report = json.loads(out)
    dumps = dumps_of(tiny_runs["mined"])
    by_epoch = {e["epoch"]: e for e in report["epochs"]}
    assert sorted(by_epoch) == [0, 1, 2] and not by_epoch[0]["active"] and by_epoch[0]["monitored"] > 0
    assert report["first_active_epoch"] == 1
    for epoch, dump in dumps.items():
        e = by_epoch[epoch]
        assert e["active"] and e["num_hard"] == dump["num_hard"]
        assert e["hardest"] == dump["samples"][:3]
        assert e["excluded"] == dump["decision"]["excluded"] and e["eligible"] == dump["decision"]["eligible"]
        assert e["selection"] == dump["selection"] and e["cut"] == dump["decision"]["cut"]
        assert e["loss_quantiles"] == dump["decision"]["quantiles"]
        assert e["sample_loss"] == dump["decision"]["sample_loss"] == {"statistic": "worst_tokens", "fields": ["desc"]}
        pop = e["population"]
        assert pop["file"] == dump["population"] and pop["samples"] == 48 and pop["hard"] == dump["num_hard"]
        assert pop["eligible"] == dump["decision"]["eligible"]
        assert {k: pop["excluded"][k] for k in dump["decision"]["excluded"]} == dump["decision"]["excluded"]
        shares = e["slices"]["hard_set"]
        assert sum(shares.values()) == pytest.approx(1.0)
        assert shares.get("hard", 0.0) == pytest.approx(sum(r["slice"] == "hard" for r in dump["samples"]) / dump["num_hard"])
    previous = {r["base_idx"] for r in dumps[1]["samples"]}
    current = {r["base_idx"] for r in dumps[2]["samples"]}
    assert by_epoch[2]["churn"]["kept"] == len(previous & current)
    assert by_epoch[1]["churn"] == {"previous_plan": False, "entered": len(previous), "left": 0, "kept": 0, "jaccard_distance": 1.0}
    assert set(report["eval"]) >= {"eval_target_loss", "slice/hard_loss", "slice/easy_loss"}


def test_every_flag_writes_its_file(tiny_runs, cli, tmp_path):
    plot, sheet, out_json = tmp_path / "plot.png", tmp_path / "sheet.png", tmp_path / "report.json"
    rc, out, err = cli(
        "inspect", tiny_runs["mined"], "--plot", plot, "--sheet", sheet, "--top", 4, "--epoch", 1,
        "--json", out_json, "--against", tiny_runs["control"],
    )
    assert rc == 0, err
    assert "hardest of epoch 1" in out and "this-other" in out and f"wrote {plot}" in out
    assert "loss: each sample's mean of its 3 highest token losses" in out
    with Image.open(plot) as im:
        assert im.size[0] >= 1000 and im.size[1] >= 1000  # three rows of panels with --against
    with Image.open(sheet) as im:
        assert im.size[0] >= 4 * 256 and im.size[1] >= 256
    assert plot.stat().st_size > 30_000 and sheet.stat().st_size > 5_000
    report = json.loads(out_json.read_text())
    assert set(report["against"]["metrics"]) >= {"eval_target_loss", "slice/hard_loss"}
    row = report["against"]["metrics"]["eval_target_loss"][-1]
    assert row["diff"] == pytest.approx(row["this"] - row["other"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png", "report.json", "sheet.png"]  # no temp files


def test_a_missing_image_is_a_placeholder_a_warning_and_exit_2(tiny_runs, cli, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(tiny_runs["mined"], run, ignore=shutil.ignore_patterns("checkpoint-*", "final", "runs"))
    dump_file = run / "hard_samples_epoch_2.json"
    dump = json.loads(dump_file.read_text())
    gone = str(tmp_path / "moved" / "train_99999.png")
    dump["samples"][0]["images"] = [gone]
    dump_file.write_text(json.dumps(dump))
    sheet = tmp_path / "sheet.png"
    rc, out, err = cli("inspect", run, "--sheet", sheet, "--top", 3)
    assert rc == 2
    assert f"warning: {gone}: image not found; drawn as a placeholder" in err
    assert "1 image(s) of the sheet missing" in err and "Traceback" not in err
    with Image.open(sheet) as im:
        assert im.size[0] >= 3 * 256
