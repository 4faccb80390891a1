"""Run `dlcli train` under torchrun, making the process of rank FAIL_RANK raise in epoch 2.

A test helper: it simulates a crash on one process (say, a GPU error) without any test hook
in dlcli itself.
"""

import os
import sys

from dlcli import engine
from dlcli.cli import main

fail_rank = int(os.environ.get("FAIL_RANK", "1"))
original = engine.Trainer.train_one_epoch


def crashing_epoch(self, batches):
    if int(os.environ.get("RANK", "0")) == fail_rank and self.epoch == 2:
        raise RuntimeError(f"simulated failure on rank {fail_rank}")
    return original(self, batches)


engine.Trainer.train_one_epoch = crashing_epoch
sys.argv = ["dlcli", *sys.argv[1:]]
main()
