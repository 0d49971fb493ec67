#!/usr/bin/env bash
# One call on a GPU machine (the device tool, or any CUDA box with torch + triton already installed):
# install the package (editable, with the CUDA extension), run the whole test suite on the GPU, then the benchmarks.
# Results: bench/results/ (and copies under $OUT when the device tool sets it). Usage: bash bench/run_gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
results=bench/results
mkdir -p "$results"
log="$results/gpu-run.log"
{
  date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
  export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
  # --no-deps: the GPU machine has torch and triton and no network; -e: deps_fast.kernels maps to kernels/
  time (DEPS_FAST_BUILD_CUDA=1 MAX_JOBS=${MAX_JOBS:-8} python3 -m pip install -q --no-build-isolation --no-deps -e .) || exit 1
  python3 -c "import deps_fast; print(deps_fast.available_backends('cuda'))"
  PYTHONUNBUFFERED=1 python3 -m pytest -q -p no:cacheprovider tests -rfEs --junitxml="$results/gpu-tests.xml"
  echo "pytest exit: $?"
  PYTHONUNBUFFERED=1 python3 bench/bench_distill.py --compile
  PYTHONUNBUFFERED=1 python3 bench/bench_depthwise.py --compile
  PYTHONUNBUFFERED=1 python3 bench/bench_depthwise.py --dtype fp32 --quick --out "$results/fp32"
  PYTHONUNBUFFERED=1 python3 bench/bench_step.py
  PYTHONUNBUFFERED=1 python3 bench/bench_gpu_hours.py --budget-scales ${GPU_HOURS_SCALES:-0.01,0.02,0.04} \
    --seeds 0,1,2 ${GPU_HOURS_DATA:+--data $GPU_HOURS_DATA} -- --width-mult 1.0 --batch-size 256 --lr 0.2
} 2>&1 | tee "$log"
if [ -n "${OUT:-}" ]; then cp -r "$results"/*.json "$results"/*.csv "$results"/gpu-* "$OUT"/ 2>/dev/null; fi
