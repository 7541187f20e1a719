"""``hardmine demo --fast`` runs the whole recipe and shows a plan applied."""

import pytest

from hardmine import cli

pytestmark = pytest.mark.integration


def test_fast_demo_mines_and_prints_its_table(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_console_logging", lambda: None)
    assert cli.main(["demo", "--fast", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "hardmine demo finished" in out and f"hardmine inspect {tmp_path / 'run'}" in out
    table = out[out.index("target validation loss by slice"):].splitlines()
    assert [line.split()[1] for line in table[2:]] == ["off", "active", "active"]
    assert sorted(p.name for p in (tmp_path / "run").glob("hard_samples_epoch_*.json")) == [
        "hard_samples_epoch_1.json", "hard_samples_epoch_2.json"
    ]
