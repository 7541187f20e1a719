#!/usr/bin/env bash
# On the lent GPU machine (torch and transformers preinstalled, no network):
# install the carried wheels (.gpu-wheels/: deepspeed, pydantic, kornia, ...),
# then run the ZeRO-2 bf16 mining check on one GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --no-deps --no-index .gpu-wheels/*.whl
export PYTHONPATH="$PWD/src" HARDMINE_CACHE="${OUT:-/tmp}/hardmine-cache"
python3 -c "import torch, transformers, deepspeed; print('torch', torch.__version__, 'transformers', transformers.__version__, 'deepspeed', deepspeed.__version__)"
torchrun --nproc_per_node 1 scripts/gpu_zero2_mining.py --output-dir "${OUT:-/tmp}/gpu-check"
