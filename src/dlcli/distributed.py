"""Data parallelism on PyTorch's own engine: torchrun's environment, DDP, and the launcher.

Under torchrun (RANK and WORLD_SIZE set) each process takes its own GPU (cuda:LOCAL_RANK,
NCCL) or runs on the CPU (gloo). `dlcli train --nproc N` starts the same thing through
torch's elastic launcher for people who do not know torchrun.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

FAILURE_MARKER = ".rank-failure"


@dataclass
class Distributed:
    """This process's place in a data-parallel job (world_size 1 means a single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    all_reduce: Optional[Callable] = None  # sums a CPU tensor over ranks, returns it on the CPU
    wrap: Optional[Callable] = None  # (model, device) -> DistributedDataParallel(model)
    run_dir: Optional[Path] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def abort_others(self, message: str) -> None:
        """Leave the failing rank's message where rank 0 finds it; torchrun then stops every rank."""
        if self.run_dir is not None and not self.is_main:
            try:
                (self.run_dir / FAILURE_MARKER).write_text(f"rank {self.rank}: {message}\n", encoding="utf-8")
            except OSError:
                pass

    def failure_message(self) -> Optional[str]:
        if self.run_dir is None:
            return None
        marker = self.run_dir / FAILURE_MARKER
        try:
            return marker.read_text(encoding="utf-8").strip()
        except OSError:
            return None

    def close(self, wait_for_others: bool = False) -> None:
        """Leave the process group; after a success, only once every process is done.

        Tearing gloo down on one process while another still works in it (rank 0 writing
        results and plots) aborted the early one now and then ('terminate called without an
        active exception'), so a successful run meets at a barrier first. A failing process
        must not wait there: the others may never arrive.
        """
        if self.world_size > 1:
            import torch.distributed as tdist

            if tdist.is_initialized():
                if wait_for_others:
                    tdist.barrier()
                tdist.destroy_process_group()


def distributed_from_env() -> Distributed:
    """A Distributed for this process: torchrun's when its variables are set, else a single one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if "RANK" not in os.environ or world_size <= 1:
        return Distributed()
    import torch
    import torch.distributed as tdist
    from torch.nn.parallel import DistributedDataParallel

    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and os.environ.get("DLCLI_DIST_BACKEND", "") != "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if use_cuda else "gloo")

    def all_reduce(tensor):
        t = tensor.to(f"cuda:{local_rank}") if use_cuda else tensor
        tdist.all_reduce(t)
        return t.cpu()

    def wrap(model, device):
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    return Distributed(rank, world_size, local_rank, all_reduce, wrap)


def launch(nproc: int, argv: list[str]) -> int:
    """Re-run this command line under torch's elastic launcher with `nproc` processes; its exit
    code, or WorkerFailed when a rank failed (that rank has printed why)."""
    from torch.distributed import run as torchrun

    rest, skip = [], False
    for arg in argv[1:]:
        if skip:
            skip = False
            continue
        if arg == "--nproc":
            skip = True
            continue
        if arg.startswith("--nproc="):
            continue
        rest.append(arg)
    args = ["--standalone", f"--nproc_per_node={nproc}", "-m", "dlcli", *rest]
    try:
        torchrun.main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception as exc:  # ChildFailedError: the failing rank has printed its own message
        from .errors import WorkerFailed

        raise WorkerFailed(
            f"data-parallel training failed ({type(exc).__name__}); see the rank's message above."
        ) from None
    return 0
