#!/usr/bin/env bash
# Every GPU check in one go, for a GPU host reached for a few minutes (about 8 min on one H100/H200):
#   1. scripts/gpu_check.py          metering core: meter timing, attribution vs standalone references, overhead
#   2. scripts/gpu_service_check.py  the service on the GPU: every task, headers, /metrics balance, metered p50
#   3. tests/energy/test_nvml*.py    the NVML backend on real hardware (and against autospec fakes)
#   4-5. bench/bench_metering.py     the overhead benchmark on that 16-core host: NVML read densely, then sparsely
#   6. bench/bench_serving.py        serving on that host's CPU: served vs floor vs in-process, metered vs unmetered
# Each step has its own time limit; logs and JSON go to $OUT (default ./device-out). Needs torch with CUDA,
# transformers, nvidia-ml-py, httpx, pyyaml, pytest; what is missing (fastapi, pydantic, codecarbon, ...) can
# travel as wheels in .whl/ (see docs/gpu-check.md).
set -u
OUT=${OUT:-device-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export WATTSERVE_DEMO_DIR=/tmp/wattserve-demo
quiet() { grep -v -E "Loading weights|^\s*$|UNEXPECTED|^Key |^-+\+|^Notes:|can be ignored"; }
step() { echo; echo "=== $1 ($(date +%T))"; }

step "host"
nvidia-smi --query-gpu=name,driver_version,power.draw,power.limit,clocks.sm --format=csv
python3 -c "import torch, transformers, pynvml; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"

step "1. gpu_check"
timeout 240 python3 scripts/gpu_check.py --out "$OUT" 2>&1 | tee "$OUT/gpu_check.log" | quiet | tail -n 8

step "2. gpu_service_check"
timeout 200 python3 scripts/gpu_service_check.py --out "$OUT" 2>&1 | tee "$OUT/gpu_service_check.log" | quiet \
    | grep -v '^{' | tail -n 14

step "3. NVML tests"
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/energy/test_nvml_gpu.py tests/energy/test_nvml.py \
    tests/energy/test_sampler.py 2>&1 | tee "$OUT/nvml_tests.log" | tail -n 12

step "4. bench_metering overhead: CPU work items, NVML read densely (work charged on every device, as GPU work is)"
timeout 120 python3 bench/bench_metering.py --skip attribution --overhead-rounds 16 --meters nvml --charge all 2>&1 \
    | tee "$OUT/bench_metering_dense.log" | tail -n 1

step "5. bench_metering overhead: CPU work items charged on the host, so NVML is read sparsely (the default)"
timeout 120 python3 bench/bench_metering.py --skip attribution --overhead-rounds 16 2>&1 \
    | tee "$OUT/bench_metering.log" | tail -n 1

step "6. bench_serving on the host's CPU (MiniLM's shape, random weights)"
timeout 200 python3 bench/bench_serving.py --source random-minilm --sets 1 --pairs 2 2>&1 \
    | tee "$OUT/bench_serving.log" | tail -n 1
step "done"
