#!/usr/bin/env bash
# On the lent GPU machine (torch and transformers preinstalled, no network):
# install the carried wheels (.gpu-wheels/: deepspeed, pydantic, kornia, ...),
# then run the ZeRO-2 bf16 mining check on one GPU. The report (one JSON line)
# and the dumps land in $OUT when it is set.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1
python3 -m pip install --quiet --no-deps --no-index .gpu-wheels/*.whl
export PYTHONPATH="$PWD/src" HARDMINE_CACHE=/tmp/hardmine-cache TOKENIZERS_PARALLELISM=false
python3 -c "import torch, transformers, deepspeed; print('torch', torch.__version__, 'transformers', transformers.__version__, 'deepspeed', deepspeed.__version__, torch.cuda.get_device_name(0))"
torchrun --nproc_per_node 1 scripts/gpu_zero2_mining.py --output-dir /tmp/gpu-check | tee /tmp/gpu-check.log
if [ -n "${OUT:-}" ]; then
  grep '"check": "gpu_zero2_mining"' /tmp/gpu-check.log > "$OUT/report.json" || true
  cp /tmp/gpu-check/run/hard_samples_epoch_*.json "$OUT/" 2>/dev/null || true
fi
