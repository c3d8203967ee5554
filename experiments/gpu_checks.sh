#!/usr/bin/env bash
# Every check that needs a GPU, in one call: about 12 minutes on one H100/H200.
#
#   bash experiments/gpu_checks.sh OUT_DIR
#
# 1. the recorder's cost on ResNet-34 (the GPU rows of the cost table), about 6 minutes;
# 2. the main job with its GPU defaults (2,000 steps per net), timed, with its verdict;
# 3. the plain_vs_residual experiment's `gpu` profile (CIFAR-style nets, synthetic data, no
#    download), the degradation check at a GPU budget.
# Each part writes under OUT_DIR as it goes, so a run cut short keeps what it finished; the
# device and versions go to OUT_DIR/device.txt.
set -uo pipefail
OUT=${1:?give an output directory}
mkdir -p "$OUT"
{
    date -u +%Y-%m-%dT%H:%M:%SZ
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python -c "import torch, gradlab; print('torch', torch.__version__, 'gradlab', gradlab.__version__)"
} > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

timeout 480 python -m gradlab.bench.gpu --out "$OUT/bench" 2>&1 | tail -n 40 | tee "$OUT/bench.txt"

/usr/bin/time -f "main job wall %e s" timeout 300 gradlab compare plain34 resnet34 --out "$OUT/main" \
    2>&1 | tail -n 20 | tee "$OUT/main.txt"

timeout 600 gradlab run experiments/plain_vs_residual.toml --profile gpu --out "$OUT/pvr" \
    --report "$OUT/plain_vs_residual_gpu.html" 2>&1 | tail -n 30 | tee "$OUT/pvr.txt"
