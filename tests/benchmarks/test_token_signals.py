"""The token-signal scores: statistics of a sample's token losses and how they rank wrong labels."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import token_signals  # noqa: E402


def test_statistics_of_one_sample():
    stats = token_signals.token_statistics(np.array([0.1, 4.0, 0.2, 2.0, 0.1]))
    assert stats["mean"] == pytest.approx(1.28) and stats["max"] == 4.0 and stats["top3"] == pytest.approx(2.0666667)


def test_confidence_is_the_top1_probability_at_the_worst_tokens():
    losses = np.array([0.1, 4.0, 0.2, 2.0, 2.0])
    top1 = np.array([0.9, 0.8, 0.7, 0.2, 0.5])
    # The 3 worst: 4.0, then the tie at 2.0 (both taken) -> tokens 1, 3, 4.
    assert token_signals.token_statistics(losses, top1)["confidence3"] == pytest.approx(0.5)
    assert "confidence3" not in token_signals.token_statistics(losses)


def test_auc_counts_ties_half_and_orders_perfectly_separated_groups():
    assert token_signals.auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert token_signals.auc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert token_signals.auc([1.0], [1.0]) == 0.5


def test_judge_scores_each_statistic_against_clean_and_clean_hard():
    wrong = np.array([True, False, False, False, False, False, False, False, False, False])
    hard = np.array([False, True, True, False, False, False, False, False, False, False])
    # "max" puts the wrong label first; "mean" puts a hard clean sample above it.
    stats = {"mean": np.array([1.0, 1.5, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]),
             "max": np.array([5.0, 3.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])}
    verdict = token_signals.judge(stats, wrong, hard)
    assert verdict["max"] == {"auc_wrong_vs_clean": 1.0, "auc_wrong_vs_clean_hard": 1.0, "top10_wrong_share": 1.0}
    assert verdict["mean"]["auc_wrong_vs_clean_hard"] == 0.5 and verdict["mean"]["top10_wrong_share"] == 0.0


def test_judge_clean_scores_how_each_statistic_ranks_the_hard_slice():
    hard = np.array([True, True] + [False] * 18)
    stats = {"mean": np.array([0.5, 2.0] + [1.0] * 18), "top3": np.array([3.0, 2.0] + [1.0] * 18)}
    verdict = token_signals.judge_clean(stats, hard)
    assert verdict["top3"] == {"auc_hard_vs_rest": 1.0, "top10_hard_share": 1.0}
    # One hard sample above the rest, one below: chance; one of the top two is hard.
    assert verdict["mean"] == {"auc_hard_vs_rest": 0.5, "top10_hard_share": 0.5}


def _finished(folder, seed):
    for condition in ("clean", "noisy"):
        (folder / "vl" / f"seed{seed}" / condition / "uniform" / "final").mkdir(parents=True)


def test_seed_folder_finds_each_seed_in_the_one_suite_that_finished_it(tmp_path):
    _finished(tmp_path / "a", 0)
    _finished(tmp_path / "b", 3)
    (tmp_path / "a" / "vl" / "seed3" / "clean").mkdir(parents=True)  # begun, never finished
    work = [str(tmp_path / "a"), str(tmp_path / "b")]
    assert token_signals.seed_folder(work, 3) == tmp_path / "b" / "vl" / "seed3"
    assert token_signals.seed_folder(work, 0) == tmp_path / "a" / "vl" / "seed0"
    with pytest.raises(SystemExit, match="0 folders hold finished uniform runs of seed 7"):
        token_signals.seed_folder(work, 7)
    _finished(tmp_path / "b", 0)  # an older suite's seed 0 left in the other folder
    with pytest.raises(SystemExit, match="2 folders hold finished uniform runs of seed 0"):
        token_signals.seed_folder(work, 0)


def test_descriptions_is_the_mean_loss_over_the_description_tokens_alone():
    losses = np.array([0.1, 4.0, 0.2, 2.0])
    stats = token_signals.token_statistics(losses, description_mask=np.array([False, True, False, True]))
    assert stats["descriptions"] == pytest.approx(3.0)
    assert np.isnan(token_signals.token_statistics(losses, description_mask=np.zeros(4, dtype=bool))["descriptions"])
