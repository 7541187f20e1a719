import subprocess
import sys

from hardmine.cli import build_parser


def test_launcher_local_rank_is_accepted_before_the_subcommand():
    # The deepspeed launcher runs `python -m hardmine --local_rank=N train ...`.
    args = build_parser().parse_args(["--local_rank=1", "train", "--config", "c.yaml", "training.seed=3"])
    assert args.command == "train" and args.overrides == ["training.seed=3"] and args.local_rank == 1


def test_validate_reports_every_problem_and_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  modle: x\ncustom:\n  train_jsonl: missing.jsonl\n")
    done = subprocess.run([sys.executable, "-m", "hardmine", "validate", "--config", str(bad)], capture_output=True, text=True)
    assert done.returncode == 2
    assert "model.modle: unknown key; did you mean 'model.model'?" in done.stderr
    assert "custom.train_jsonl: file" in done.stderr
