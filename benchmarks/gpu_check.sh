#!/usr/bin/env bash
# edgert's CUDA path on a real GPU, in one command of at most ~8 minutes:
#   1. the CUDA kernel and interpreter tests, on the GPU (not the simulator)   (<= 3 min)
#   2. benchmarks/gpu_check.py: SqueezeNet and ResNet-50 at batch 1 and 32, fp32 and int8:
#      correctness vs onnxruntime, latency vs edgert CPU and onnxruntime CPU/CUDA  (<= 3.8 min)
#   3. `edgert bench --device cuda` on SqueezeNet (the CLI path)                (<= 45 s)
# Results go to ${1:-gpu_results}/: gpu_results.json, gpu_results.md, tests.txt, bench.txt.
# Needs the project installed with the test extra (`pip install -e ".[test]"`, which brings
# numba-cuda); the light models come from the onnx wheel, nothing is downloaded.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_results}
mkdir -p "$OUT"
if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
unset NUMBA_ENABLE_CUDASIM
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$OUT/nvidia-smi.txt"
status=0

echo "== 1/3 CUDA tests on the GPU"
timeout 180 python -m pytest tests/test_cuda_kernels.py tests/test_cuda_interpreter.py \
    tests/test_cuda_isolation.py -q -p no:cacheprovider 2>&1 | tail -25 | tee "$OUT/tests.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== 2/3 models: correctness and latency"
timeout 230 python benchmarks/gpu_check.py --out "$OUT" --budget 160 || status=1

echo "== 3/3 edgert bench --device cuda"
MODEL=$(python -c "import sys; sys.path.insert(0, 'benchmarks'); import light_models; \
print(light_models.materialize('squeezenet'))")
timeout 45 edgert bench "$MODEL" --device cuda --runs 20 2>&1 | tee "$OUT/bench.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "results in $OUT/ (status $status)"
exit $status
