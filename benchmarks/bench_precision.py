"""fp32 against bf16 on this CPU for the shipped configs, and what `training.precision: auto`
takes for each: does the rule (bf16 from 1 GFLOP a step on a CPU with native bf16) choose the
faster one? (the speed issue, item 2)

Each case is a real dlcli run of the config (bench_train's cases, on the data it finds) for
`--epochs` epochs, fp32 and bf16 alternating, `--reps` times; the epochs after the first are
timed (`seconds` in metrics.csv) and the medians compared. One more short run with
`precision: auto` reads what auto chose and why from run.json.
    python benchmarks/bench_precision.py                          # mlp,cnn,mnist_lenet5,imdb_conv1d,lstm
    python benchmarks/bench_precision.py --cases cnn --reps 3 --max-train 10000
Needs a CPU with native bf16 (`dlcli info`); elsewhere dlcli refuses bf16 and this says so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from bench_train import CASES, dlcli_epochs, dlcli_overrides, synthetic_idx_root  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="mlp,cnn,mnist_lenet5,imdb_conv1d,lstm", help=f"of {','.join(CASES)}")
    parser.add_argument("--data", help="data.root holding mnist/ and imdb/ (synthetic files of their shapes otherwise)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--max-train", type=int, default=6000, help="training samples per run")
    parser.add_argument("--json")
    args = parser.parse_args()
    from dlcli.devices import cpu_bf16_native

    if not cpu_bf16_native():
        sys.exit("This CPU has no native bf16: dlcli refuses training.precision: bf16 here, and auto takes fp32.")
    data = args.data or synthetic_idx_root()
    rows = []
    print(f"{'case':14} {'fp32 s':>8} {'bf16 s':>8} {'bf16/fp32':>9}  auto")
    for case in args.cases.split(","):
        base = dlcli_overrides(case, data, "cpu", args.max_train)
        times: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for rep in range(args.reps):
            for precision in ("fp32", "bf16") if rep % 2 == 0 else ("bf16", "fp32"):
                run = dlcli_epochs(case, data, args.epochs, "cpu", [*base, f"training.precision={precision}"])
                times[precision] += run["seconds"][1:]
        auto = dlcli_epochs(case, data, 1, "cpu", [*base, "training.precision=auto"])["run_info"]
        fp32, bf16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
        faster = "bf16" if bf16 < fp32 else "fp32"
        verdict = "right" if auto["precision"] == faster else "WRONG"
        rows.append(
            {"case": case, "fp32": fp32, "bf16": bf16, "auto": auto["precision"], "why": auto["precision_reason"]}
        )
        print(
            f"{case:14} {fp32:8.3f} {bf16:8.3f} {bf16 / fp32:9.3f}  {auto['precision']} ({verdict}): "
            f"{auto['precision_reason']}",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
