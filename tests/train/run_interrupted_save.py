"""A training run that stops in the middle of its first checkpoint save (for the test).

Usage: python run_interrupted_save.py CONFIG READY_FILE

The save of the model weights goes through; before the optimizer and the
trainer state are written, the run creates READY_FILE and sleeps, so that the
test can interrupt it with a real SIGINT at that point.
"""

import signal
import sys
import time
from pathlib import Path

from transformers import Trainer

from hardmine.config import load_config
from hardmine.recipe.checks import CONFIG_CHECKS
from hardmine.recipe.run import run_training


def main() -> None:
    config, ready = sys.argv[1], Path(sys.argv[2])
    # A terminal's Ctrl-C reaches a process with Python's own SIGINT handling. A child
    # inherits an ignored or blocked SIGINT from its parent: a test runner started
    # with `&` from a non-interactive shell (CI scripts, make recipes) runs with
    # SIGINT ignored, as POSIX shells do for background commands. So say what was
    # inherited and start afresh.
    print(f"inherited SIGINT handler {signal.getsignal(signal.SIGINT)!r}, blocked {signal.pthread_sigmask(signal.SIG_BLOCK, [])!r}",
          file=sys.stderr, flush=True)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def stall(self, output_dir):
        ready.write_text(output_dir)
        time.sleep(600)

    Trainer._save_optimizer_and_scheduler = stall
    run_training(load_config(config, checks=CONFIG_CHECKS))


if __name__ == "__main__":
    main()
