"""``hardmine inspect``: what mining picked, and whether it helped, from a run's files.

Reads a run's output folder (the dumps, the population files, the epoch log and
Trainer's ``trainer_state.json``) into per-epoch tables, one figure and a
contact sheet of the hardest samples. Imports the engine's file formats
(:mod:`hardmine.core`) and nothing of training: no model, no torch, no
transformers.

Modules: :mod:`.run` reads and checks the files, :mod:`.report` makes the
tables, :mod:`.plot` the figure, :mod:`.sheet` the contact sheet,
:mod:`.command` the command line's work (atomic outputs, exit codes).
"""

from .report import compare_runs, format_comparison, format_report, run_report
from .run import InspectError, Run, load_run

__all__ = ["InspectError", "Run", "compare_runs", "format_comparison", "format_report", "load_run", "run_report"]
