#!/usr/bin/env bash
# One prepared run for a machine with a CUDA GPU, most telling first: the tests that need CUDA,
# ResNet-18 on 3x32x32 at batch 256 (fp32, bf16, channels-last, compile, cuda_graph, against a
# hand-written loop), when bf16 pays (fp32 against bf16 steps by counted work, MLP to r3d_18:
# the rule of training.precision: auto on CUDA), the CNN under each speed option (batch, bf16,
# CUDA graphs, channels-last), the speed benchmark at fp32 with training.cuda_graph and eager,
# and r3d_18 on 16x112x112 clips at batch 32 (fp32, bf16, channels-last-3d, against a
# hand-written loop). Prints the numbers; about 6 minutes in all on an H200 (2026-12-04), each
# part bounded by its timeout (at most 19).
#   bash benchmarks/gpu_check.sh [DATA_ROOT]     (DATA_ROOT holds mnist/ and fashion_mnist/;
#                                                 synthetic IDX files of the same shapes otherwise)
# PARTS picks sections (default all: tests,resnet,bf16,variants,graph,fp32,video), e.g.
#   PARTS=tests,resnet bash benchmarks/gpu_check.sh   then   PARTS=bf16,variants,graph,fp32,video bash ...
# where a call's time is short, or one question alone: PARTS=video (about 1 minute on an H200).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
LOGS=${OUT:-/tmp/dlcli-gpu-check}
mkdir -p "$LOGS"
DATA_ARGS=()
[ -n "${1:-}" ] && DATA_ARGS=(--data "$1")
status=0
PARTS=",${PARTS:-tests,resnet,bf16,variants,graph,fp32,video},"
want() { [[ "$PARTS" == *",$1,"* ]]; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || status=1
$PY -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())" || exit 1

if want tests; then
echo "== tests (CUDA ones run here; CPU-only ones too, as a check of this torch build)"
timeout 120 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_engine.py tests/test_models.py \
    2>&1 | tee "$LOGS/tests.log" | tail -15 || status=1
fi

if want resnet; then
echo "== ResNet-18, 3x32x32, batch 256: fp32, bf16, channels-last, compile, cuda_graph; dlcli vs hand-written"
timeout 300 $PY benchmarks/gpu_resnet.py --json "$LOGS/resnet.json" || status=1
fi

if want bf16; then
echo "== when does bf16 pay? fp32 against bf16 steps by work per step (MLP, CNN, ResNet-18/50, r3d_18)"
timeout 150 $PY benchmarks/gpu_bf16_rule.py --json "$LOGS/bf16_rule.json" || status=1
fi

if want variants; then
echo "== the CNN under each option: batch x precision x cuda_graph x channels_last (s/epoch)"
GV_DATA=${1:-}
[ -z "$GV_DATA" ] && GV_DATA=$($PY -c "import sys; sys.path.insert(0, 'benchmarks'); import bench_train; print(bench_train.synthetic_idx_root())")
(cd benchmarks && timeout 150 $PY gpu_variants.py --data "$(cd .. && realpath "$GV_DATA")" --channels-last true,false \
    --batches 128,1024 \
    --json "$LOGS/variants.json") || status=1
fi

if want graph; then
echo "== speed at fp32 with training.cuda_graph (dlcli's whole step replayed from a CUDA graph)"
timeout 90 $PY benchmarks/bench_train.py --device cuda --reps 2 --skip memory,startup --set training.cuda_graph=true \
    --json "$LOGS/bench_graph.json" "${DATA_ARGS[@]}" || status=1
fi

if want fp32; then
echo "== speed at fp32: dlcli against the hand-written loop (same tensors, same GPU)"
timeout 100 $PY benchmarks/bench_train.py --device cuda --reps 2 --skip memory,startup,scaling \
    --json "$LOGS/bench_fp32.json" "${DATA_ARGS[@]}" || status=1
fi

if want video; then
echo "== r3d_18, 16x112x112x3 clips, batch 32: fp32, bf16, channels-last-3d; dlcli vs hand-written"
timeout 300 $PY benchmarks/gpu_video.py --json "$LOGS/video.json" || status=1
fi

exit $status
