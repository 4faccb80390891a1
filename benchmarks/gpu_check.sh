#!/usr/bin/env bash
# One prepared run for a machine with a CUDA GPU, most telling first: the tests that need CUDA,
# the CNN under each speed option (batch, bf16, CUDA graphs, channels-last), then the speed
# benchmark at fp32 with training.cuda_graph and eager. Prints the numbers; under 8 minutes.
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
timeout 120 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_engine.py tests/test_models.py \
    2>&1 | tee "$LOGS/tests.log" | tail -15 || status=1

echo "== the CNN under each option: batch x precision x cuda_graph x channels_last (s/epoch)"
GV_DATA=${1:-}
[ -z "$GV_DATA" ] && GV_DATA=$($PY -c "import sys; sys.path.insert(0, 'benchmarks'); import bench_train; print(bench_train.synthetic_idx_root())")
(cd benchmarks && timeout 150 $PY gpu_variants.py --data "$(cd .. && realpath "$GV_DATA")" --channels-last true,false \
    --batches 128,1024 \
    --json "$LOGS/variants.json") || status=1

echo "== speed at fp32 with training.cuda_graph (dlcli's whole step replayed from a CUDA graph)"
timeout 90 $PY benchmarks/bench_train.py --device cuda --reps 2 --skip memory,startup --set training.cuda_graph=true \
    --json "$LOGS/bench_graph.json" "${DATA_ARGS[@]}" || status=1

echo "== speed at fp32: dlcli against the hand-written loop (same tensors, same GPU)"
timeout 100 $PY benchmarks/bench_train.py --device cuda --reps 2 --skip memory,startup,scaling \
    --json "$LOGS/bench_fp32.json" "${DATA_ARGS[@]}" || status=1

exit $status
