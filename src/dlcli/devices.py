"""What this machine's processors can do: native bf16 on the CPU, the CUDA GPUs; what
`training.precision: auto` and `training.compile: auto` take on them; and the one process-level
setting training makes for it (glibc's malloc, for recurrent models).

Asked by `training.precision` before a run starts, and shown by `dlcli info`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

# glibc's malloc hands out blocks above a threshold as fresh pages (mmap), and that threshold
# never rises above 32 MB by itself. A recurrent layer's step frees and allocates the same
# buffers of up to ~100 MB every time (an LSTM's gates over 500 steps), so by default each step
# faulted its memory in again: on two cores the IMDB LSTM spent 7-10 s of each 15 s in the
# kernel (2-3 million page faults for 3 epochs of 5,000 reviews). Serving blocks up to 128 MB
# from the heap and keeping up to 128 MB free at its top took the epoch from 3.6-4.8 s to
# 2.2-2.4 s. PyTorch's CPU tuning guide suggests jemalloc or tcmalloc for the same reason.
_MMAP_THRESHOLD = 128 * 2**20  # blocks below this come from the heap, not fresh pages
_TRIM_THRESHOLD = 128 * 2**20  # free memory kept at the heap's top before any is returned


def keep_freed_memory_for_reuse() -> bool:
    """Tell glibc's malloc to reuse freed memory instead of returning it to the system and
    faulting it in again; True where it applied (Linux with glibc), False elsewhere."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, _MMAP_THRESHOLD)) and bool(mallopt(m_trim_threshold, _TRIM_THRESHOLD))


def cpu_capability() -> str:
    """The widest vector instruction set PyTorch's CPU kernels use here (e.g. AVX2, AVX512)."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def cpu_bf16_native() -> bool:
    """True when oneDNN runs bf16 in hardware (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


# The work per training step (forward and backward, counted by torch.utils.flop_counter) from
# which bf16 autocast paid in eager mode, per device type. Measured with bench_precision.py (dlcli
# runs, two-core AVX512-BF16 CPU) and gpu_bf16_rule.py (an H200), RESULTS.md: on the CPU the
# Fashion-MNIST MLP (0.01 GFLOP a step) ran 1.2-1.3x slower in bf16, LeNet-5 (0.29) and the IMDB
# classifier (0.33) 0.2-0.6x, the course CNN (1.8) 0.7x; on the H200 bf16 lost or tied below 1
# TFLOP (the CNN 1.10, ResNet-18 at 32x32 1.44, r3d_18 at 8x56x56 0.97) and won above it
# (ResNet-18 at 224x224 0.72, r3d_18 at 16x112x112 0.60; ResNet-50 at batch 64, 1.55 TFLOP of
# many small layers, lost 3 %). Below the line the casts cost more than the faster products save.
BF16_MIN_GFLOP_PER_STEP = {"cpu": 0.1, "cuda": 1000.0}


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str  # "fp32" or "bf16": what the run computes in
    reason: str  # why, for run.json and the run's first lines


def choose_precision(
    setting: str, device: Any, recorded: bool, step_gflop: Callable[[], Optional[float]]
) -> PrecisionChoice:
    """What `training.precision` means on `device`. fp32 and bf16 are taken as given; auto takes
    bf16 where it is native and pays: a CPU with native bf16 or a GPU with bf16 support, when the
    step is recorded in a CUDA graph (the casts then cost no launches: bf16 won on every model
    measured so) or does at least BF16_MIN_GFLOP_PER_STEP of work. `step_gflop` counts that work
    (None: it cannot be counted, and fp32 stays)."""
    import torch

    if setting != "auto":
        return PrecisionChoice(setting, "set in the config")
    if device.type == "cpu" and not cpu_bf16_native():
        return PrecisionChoice("fp32", "auto: this CPU has no native bf16")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return PrecisionChoice("fp32", "auto: this GPU has no bf16")
    if device.type not in BF16_MIN_GFLOP_PER_STEP:
        return PrecisionChoice("fp32", f"auto: no bf16 rule for {device.type}")
    if recorded:
        return PrecisionChoice("bf16", "auto: the step is recorded in a CUDA graph, where bf16 pays")
    gflop, least = step_gflop(), BF16_MIN_GFLOP_PER_STEP[device.type]
    if gflop is None:
        return PrecisionChoice("fp32", "auto: the step's work could not be counted")
    where = "native bf16 on this CPU" if device.type == "cpu" else "a GPU with bf16"
    if gflop >= least:
        return PrecisionChoice(
            "bf16", f"auto: {where} and {gflop:,.1f} GFLOP a step, at least the {least:g} where bf16 pays"
        )
    return PrecisionChoice(
        "fp32", f"auto: {gflop:,.2f} GFLOP a step, below the {least:g} where bf16 pays on {device.type}"
    )


def cpp_compiler_found() -> bool:
    """torch.compile on the CPU writes C++ and needs a compiler for it."""
    import shutil

    return any(shutil.which(cc) for cc in ("c++", "g++", "clang++"))


# training.compile: auto compiles only a step bound by per-operation overhead, in a run long
# enough to win back the compiling. Measured on the two-core CPU (RESULTS.md, speed issue): the
# Fashion-MNIST MLP (0.01 GFLOP a step) ran its steady epochs at 0.56-0.62x eager compiled, a
# saving of about 0.2 ms a step, after 11.9-15 s of compiling with an empty cache; the course
# CNN (1.8 GFLOP) and the IMDB classifier (0.33 GFLOP) ran slower compiled at every epoch. So:
# at most COMPILE_MAX_GFLOP_PER_STEP, and at least twice the cold compile time to win back.
COMPILE_MAX_GFLOP_PER_STEP = 0.1
COMPILE_COLD_SECONDS = 12.0
COMPILE_SAVING_PER_STEP = 0.0002  # seconds
COMPILE_MIN_STEPS = int(2 * COMPILE_COLD_SECONDS / COMPILE_SAVING_PER_STEP)  # 120,000


@dataclass(frozen=True)
class CompileChoice:
    mode: Optional[str]  # torch.compile's mode, or None for eager
    reason: str


def choose_compile(
    setting: Any,
    device: Any,
    total_steps: int,
    blocker: Callable[[], Optional[str]],
    step_gflop: Callable[[], Optional[float]],
) -> CompileChoice:
    """What `training.compile` means for this run. true (torch.compile's default mode), a mode
    and false are taken as given. auto never compiles to find out (that would pay the cost it
    means to avoid): it compiles the CPU's one-graph step (`blocker` says why there is none) of a
    model doing at most COMPILE_MAX_GFLOP_PER_STEP a step, for at least COMPILE_MIN_STEPS steps;
    on a GPU, training.cuda_graph is the measured way to take the launches away, and auto stays
    eager."""
    if setting != "auto":
        return CompileChoice(
            None if setting is False else ("default" if setting is True else str(setting)), "set in the config"
        )
    if device.type != "cpu":
        return CompileChoice(None, f"auto: eager on {device.type} (training.cuda_graph is what pays there)")
    if not cpp_compiler_found():
        return CompileChoice(None, "auto: eager, no C++ compiler for torch.compile here")
    if total_steps < COMPILE_MIN_STEPS:
        return CompileChoice(
            None,
            f"auto: eager, {total_steps:,} steps are too few to win back compiling "
            f"(about {COMPILE_COLD_SECONDS:g} s; it pays from {COMPILE_MIN_STEPS:,})",
        )
    reason = blocker()
    if reason is not None:
        return CompileChoice(None, f"auto: eager, the step cannot be one graph ({reason})")
    gflop = step_gflop()
    if gflop is None or gflop > COMPILE_MAX_GFLOP_PER_STEP:
        work = "could not be counted" if gflop is None else f"is {gflop:,.2f} GFLOP"
        return CompileChoice(
            None, f"auto: eager, the step's work {work}; compiling pays below {COMPILE_MAX_GFLOP_PER_STEP:g}"
        )
    return CompileChoice("default", f"auto: compiled, {total_steps:,} steps of {gflop:,.3f} GFLOP, one graph")


def auto_precision_rule(device_type: str, bf16: bool) -> str:
    """What `training.precision: auto` takes on a device of this type, in words (dlcli info)."""
    if not bf16:
        return "fp32 (no native bf16)"
    least = f"bf16 for steps of at least {BF16_MIN_GFLOP_PER_STEP[device_type]:g} GFLOP"
    return f"{least} or recorded in a CUDA graph, else fp32" if device_type == "cuda" else f"{least}, else fp32"


def device_report() -> dict[str, Any]:
    """The CPU's capability and bf16 support, and each CUDA GPU with its bf16 support."""
    import os

    import torch

    bf16_native = cpu_bf16_native()
    report: dict[str, Any] = {
        "torch": torch.__version__,
        "cpu": {
            "threads": torch.get_num_threads(),
            "cores": os.cpu_count(),
            "capability": cpu_capability(),
            "bf16_native": bf16_native,
            "precision_auto": auto_precision_rule("cpu", bf16_native),
        },
        "cuda": [],
    }
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            with torch.cuda.device(index):
                gpu_bf16 = bool(torch.cuda.is_bf16_supported())
                report["cuda"].append(
                    {
                        "device": f"cuda:{index}",
                        "name": torch.cuda.get_device_name(index),
                        "bf16": gpu_bf16,
                        "precision_auto": auto_precision_rule("cuda", gpu_bf16),
                    }
                )
    return report


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"


def available_memory(device: Any) -> tuple[Optional[int], Optional[int]]:
    """(available, total) bytes on the device; (None, None) where it cannot be told. On the CPU
    the smaller of the machine's and this process's cgroup limit (a container's memory, or a
    group made with `memory.limit_in_bytes`), less what the group already holds."""
    kind = getattr(device, "type", str(device).split(":")[0])
    if kind == "cuda":
        import torch

        free, whole = torch.cuda.mem_get_info(device)
        return int(free), int(whole)
    available, total = _machine_memory()
    limit = cgroup_memory()
    if limit is not None:
        group_total, group_available = limit
        total = group_total if total is None else min(total, group_total)
        available = group_available if available is None else min(available, group_available)
    return available, total


def _machine_memory() -> tuple[Optional[int], Optional[int]]:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh if line.split()[1:]}
        return info.get("MemAvailable", info.get("MemFree")), info.get("MemTotal")
    except (OSError, ValueError, IndexError):
        try:
            page = os.sysconf("SC_PAGE_SIZE")
            return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page
        except (ValueError, OSError, AttributeError):
            return None, None


NO_LIMIT = 1 << 60  # cgroup v1 writes "no limit" as a huge number (2^63 rounded to pages)


def cgroup_memory(proc_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> Optional[tuple[int, int]]:
    """(limit, available) bytes of this process's memory cgroup (v2 `memory.max`, v1
    `memory.limit_in_bytes`), where a limit is set; None otherwise. Available is the limit less
    the group's usage, not counting the page cache the kernel can drop (inactive files)."""
    try:
        with open(proc_cgroup, encoding="utf-8") as fh:
            lines = [line.rstrip("\n").split(":", 2) for line in fh if line.count(":") >= 2]
    except OSError:
        return None
    for hierarchy, controllers, path in lines:
        if hierarchy == "0" and controllers == "":  # v2: one unified hierarchy
            folder = os.path.join(root, path.lstrip("/"))
            limit = _read_number(os.path.join(folder, "memory.max"))
            used = _read_number(os.path.join(folder, "memory.current"))
            stat = _read_stat(os.path.join(folder, "memory.stat"))
            reclaimable = stat.get("inactive_file", 0)
        elif "memory" in controllers.split(","):  # v1: the memory controller's own hierarchy
            folder = os.path.join(root, "memory", path.lstrip("/"))
            limit = _read_number(os.path.join(folder, "memory.limit_in_bytes"))
            used = _read_number(os.path.join(folder, "memory.usage_in_bytes"))
            stat = _read_stat(os.path.join(folder, "memory.stat"))
            reclaimable = stat.get("total_inactive_file", stat.get("inactive_file", 0))
        else:
            continue
        if limit is None or limit >= NO_LIMIT:
            return None
        return limit, max(0, limit - max(0, (used or 0) - reclaimable))
    return None


def _read_number(path: str) -> Optional[int]:
    try:
        with open(path, encoding="ascii") as fh:
            text = fh.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # v2 writes "max" for no limit


def _read_stat(path: str) -> dict[str, int]:
    try:
        with open(path, encoding="ascii") as fh:
            return {k: int(v) for k, v in (line.split() for line in fh if len(line.split()) == 2)}
    except (OSError, ValueError):
        return {}
