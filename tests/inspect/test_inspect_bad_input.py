"""Bad input gives one message naming the file, exit status 2, no traceback and no output file.

The run here is simulated (the real mining stage, fed made-up losses): fast,
and its files are exactly what training writes.
"""

from dataclasses import replace
import json

import numpy as np
import pytest

from hardmine.core import GuardSettings, MiningSettings, Pool, SelectorSettings
from hardmine.core.audit import SampleCatalog
from hardmine.train.mining import HardMining
from hardmine.train.sampler import ScheduleSampler
from simulation import simulate_epoch

POOLS = [Pool("target", 40), Pool("src", 20, 0.5)]


@pytest.fixture
def sim_run(tmp_path):
    """Three epochs of mining over 40 target samples (0..7 hard); no images, no trainer state."""
    run = tmp_path / "run"
    catalog = SampleCatalog(
        source=str(tmp_path / "train.jsonl"), lines=list(range(1, 41)),
        images=[(str(tmp_path / f"img{i}.png"),) for i in range(40)], slices=["hard" if i < 8 else "easy" for i in range(40)],
    )
    settings = MiningSettings(
        start_epoch=1, plateau_delta=0.9,
        selector=SelectorSettings(mode="top_k", k=5, value=None),
        noise_guard=GuardSettings(enabled=False),  # the simulated hard samples stay hard: none is a wrong label
    )
    mining = HardMining(replace(settings, dump_population=True), POOLS, ScheduleSampler(POOLS, seed=0), output_dir=run, catalogs={"target": catalog})
    for epoch in range(3):
        simulate_epoch(mining, epoch, spread=0.01)
    return run


def test_a_simulated_run_is_inspected_without_trainer_state(sim_run, cli):
    rc, out, err = cli("inspect", sim_run, "--json")
    assert rc == 0 and err == ""
    report = json.loads(out)
    assert [e["active"] for e in report["epochs"]] == [False, True, True]
    hardest = report["epochs"][1]["hardest"]
    assert {r["base_idx"] for r in hardest} <= set(range(8)) and report["epochs"][1]["slices"]["hard_set"] == {"hard": 1.0}
    rc, out, err = cli("inspect", sim_run)
    assert rc == 0 and "no trainer_state.json" in out and "train.jsonl:" in out


def test_a_run_whose_mining_finished_says_so_per_epoch(tmp_path, cli):
    settings = MiningSettings(start_epoch=1, plateau_delta=0.9, max_active_epochs=1)
    mining = HardMining(settings, POOLS, ScheduleSampler(POOLS, seed=0), output_dir=tmp_path / "run")
    for epoch in range(3):
        simulate_epoch(mining, epoch, spread=0.01)
    rc, out, err = cli("inspect", tmp_path / "run", "--json")
    assert rc == 0 and [(e["active"], e["finished"]) for e in json.loads(out)["epochs"]] == [
        (False, False), (True, False), (False, True)
    ]
    rc, out, err = cli("inspect", tmp_path / "run")
    assert rc == 0 and "\n    0  off " in out and "\n    2  finished " in out


def test_a_dump_of_an_earlier_format_is_named_and_refused(sim_run, cli):
    path = sorted(sim_run.glob("hard_samples_epoch_*.json"))[-1]
    data = json.loads(path.read_text())
    data["format"] = "hardmine.hard_samples/1"
    path.write_text(json.dumps(data))
    rc, out, err = cli("inspect", sim_run)
    assert rc == 2 and "hardmine.hard_samples/1" in err and "this hardmine reads 'hardmine.hard_samples/2'" in err


def expect_user_error(cli, tmp_path, *args, match: str):
    outputs = [tmp_path / "out" / "p.png", tmp_path / "out" / "r.json"]
    outputs[0].parent.mkdir(exist_ok=True)
    rc, out, err = cli("inspect", *args, "--plot", outputs[0], "--json", outputs[1])
    assert rc == 2
    assert match in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not any(outputs[0].parent.iterdir()), "nothing may be written"


def test_a_folder_with_no_dumps(tmp_path, cli):
    empty = tmp_path / "empty"
    empty.mkdir()
    expect_user_error(cli, tmp_path, empty, match=f"{empty}: no hard_samples_epoch_*.json")
    expect_user_error(cli, tmp_path, tmp_path / "nowhere", match="nowhere: no such folder")


def test_a_truncated_dump(sim_run, tmp_path, cli):
    dump = sim_run / "hard_samples_epoch_2.json"
    dump.write_text(dump.read_text()[:200])
    expect_user_error(cli, tmp_path, sim_run, match=f"{dump}:")
    assert "not valid JSON" in cli("inspect", sim_run)[2]


def test_a_foreign_json_under_a_dump_name(sim_run, tmp_path, cli):
    dump = sim_run / "hard_samples_epoch_2.json"
    dump.write_text('{"format": "somebody-else/3", "rows": []}')
    expect_user_error(cli, tmp_path, sim_run, match=f"{dump}: not a hardmine hard-sample dump (format 'somebody-else/3'")
    dump.write_text("[1, 2, 3]")
    expect_user_error(cli, tmp_path, sim_run, match=f"{dump}: not a hardmine hard-sample dump (format 'list'")


def test_a_dump_that_contradicts_itself(sim_run, tmp_path, cli):
    dump = sim_run / "hard_samples_epoch_2.json"
    data = json.loads(dump.read_text())
    data["num_hard"] = 99
    dump.write_text(json.dumps(data))
    expect_user_error(cli, tmp_path, sim_run, match=f"{dump}: num_hard is 99 but 'samples' lists 5 rows")


def test_a_broken_population_file_or_epoch_log(sim_run, tmp_path, cli):
    population = sim_run / "hard_samples_epoch_1.population.npz"
    population.write_bytes(population.read_bytes()[:100])
    expect_user_error(cli, tmp_path, sim_run, match=f"{population}: not a readable hardmine population file")
    population.unlink()
    expect_user_error(cli, tmp_path, sim_run, match=f"{population}: population file named by hard_samples_epoch_1.json not found")


def test_a_broken_epoch_log_line(sim_run, tmp_path, cli):
    log = sim_run / "hard_samples_epochs.jsonl"
    log.write_text(log.read_text() + '{"epoch": 3, "hsm/act\n')
    expect_user_error(cli, tmp_path, sim_run, match=f"{log}:4: not valid JSON")


def test_a_foreign_trainer_state_and_a_bad_comparison_run(sim_run, tmp_path, cli):
    other = tmp_path / "other"
    other.mkdir()
    expect_user_error(cli, tmp_path, sim_run, "--against", other, match=f"{other}: no trainer_state.json")
    state = sim_run / "checkpoint-9" / "trainer_state.json"
    state.parent.mkdir()
    state.write_text('{"hello": 1}')
    expect_user_error(cli, tmp_path, sim_run, match=f"{state}: not a Trainer state file")


def test_bad_arguments(sim_run, tmp_path, cli):
    expect_user_error(cli, tmp_path, sim_run, "--top", 0, match="--top: got 0")
    rc, _, err = cli("inspect", sim_run, "--sheet", tmp_path / "s.png", "--epoch", 7)
    assert rc == 2 and "--epoch 7: " in err and "(dumps: [1, 2])" in err
    rc, _, err = cli("inspect", sim_run, "--plot", tmp_path / "x.jpg")
    assert rc == 2 and "expected a .png file name" in err
    rc, _, err = cli("inspect", sim_run, "--plot", tmp_path / "missing" / "x.png")
    assert rc == 2 and "does not exist" in err


def test_a_sheet_of_missing_images_is_still_drawn(sim_run, tmp_path, cli):
    sheet = tmp_path / "sheet.png"
    rc, out, err = cli("inspect", sim_run, "--sheet", sheet, "--top", 3)
    assert rc == 2 and sheet.is_file()
    assert err.count("image not found; drawn as a placeholder") == 3
    assert "3 image(s) of the sheet missing" in err
    from PIL import Image

    with Image.open(sheet) as im:
        pixels = np.asarray(im)
    assert pixels.shape[1] >= 3 * 256 and (pixels == 225).all(axis=-1).any()  # the grey placeholders
