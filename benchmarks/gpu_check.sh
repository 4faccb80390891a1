#!/usr/bin/env bash
# One prepared run for a machine with a CUDA GPU: the tests that need CUDA, then the speed
# benchmark at fp32 and with bf16 autocast. Prints the numbers; finishes in under 8 minutes.
#   bash benchmarks/gpu_check.sh [DATA_ROOT]     (DATA_ROOT holds mnist/ and fashion_mnist/;
#                                                 synthetic IDX files of the same shapes otherwise)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
LOGS=${OUT:-/tmp/dlcli-gpu-check}
mkdir -p "$LOGS"
DATA_ARGS=()
[ -n "${1:-}" ] && DATA_ARGS=(--data "$1")
status=0

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || status=1
$PY -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())" || exit 1

echo "== tests (CUDA ones run here; CPU-only ones too, as a check of this torch build)"
timeout 210 $PY -m pytest -q -p no:cacheprovider -x tests/test_cuda.py tests/test_engine.py tests/test_cli.py \
    tests/test_models.py tests/test_reliability.py 2>&1 | tee "$LOGS/tests.log" | tail -15 || status=1

echo "== speed at fp32 (dlcli against the hand-written loop, same tensors, same GPU)"
timeout 170 $PY benchmarks/bench_train.py --device cuda --reps 3 --skip memory,startup \
    --json "$LOGS/bench_fp32.json" "${DATA_ARGS[@]}" || status=1

echo "== speed with bf16 autocast (both sides), CNN"
timeout 100 $PY benchmarks/bench_train.py --device cuda --cases cnn --reps 3 --precision bf16 \
    --skip memory,startup,scaling --json "$LOGS/bench_bf16.json" "${DATA_ARGS[@]}" || status=1
exit $status
