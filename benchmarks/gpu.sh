#!/usr/bin/env bash
# One GPU run (H100/H200, at most ~8 minutes): CUDA/bf16 correctness checks, then the MAE-step and classifier
# benchmarks with bf16, flash SDPA (the default SDPA backend on Hopper for these shapes) and torch.compile.
# Results go to $OUT (the device tool's output folder) or benchmarks/.
#   bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks}"
# On a bare GPU image: wheels carried in .whl/ (e.g. a newer transformers) go first on the path, then the sources.
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, timm; print('torch', torch.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__)"
python3 benchmarks/gpu_checks.py
python3 benchmarks/mae_step.py --device cuda --batch-size 256 --precisions fp32,bf16 --repeats 5 --steps-per-repeat 10 \
  --output "$out/mae_step_cuda.json"
python3 benchmarks/mae_step.py --device cuda --batch-size 256 --precisions bf16 --compile --repeats 5 --steps-per-repeat 10 \
  --output "$out/mae_step_cuda_compile.json"
python3 benchmarks/classifier.py --device cuda --batch-size 128 --precisions fp32,bf16 --repeats 5 --calls-per-repeat 10 \
  --output "$out/classifier_cuda.json"
