#!/usr/bin/env bash
# The GPU check for a bare CUDA machine: CUDA PyTorch (2.11 or newer) and torchvision already
# installed, no network, no TensorRT. Everything else comes from the bundle `make gpu-bundle`
# prepares (wheels, the baseline's weights, the held-out digits).
#   1. prints the GPU, driver, CUDA and torch versions;
#   2. installs the project's missing dependencies from BUNDLE/wheels (pip --no-index) into the
#      Python it runs with (PYTHON, default python3): use a throwaway machine or environment;
#   3. runs the GPU tests (`pytest -m gpu`; the TensorRT ones skip without it);
#   4. python -m service.bench.gpu_check: eager fp32/fp16, CUDA-graph fp16/bf16 and
#      torch.compile at batch 1..256 on 224x224, parity with fp32, and a server taking 64
#      concurrent requests with batching on. It writes gpu_check.json and gpu_check.md.
# Usage: scripts/gpu_check.sh OUTDIR [BUNDLE]       (about 5 minutes on an H200)
set -uo pipefail
OUT=${1:?usage: scripts/gpu_check.sh OUTDIR [BUNDLE]}
BUNDLE=${2:-gpu-bundle}
PY=${PYTHON:-python3}
cd "$(dirname "$0")/.." || exit 2
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
[ -f "$BUNDLE/requirements.txt" ] || { echo "no $BUNDLE/requirements.txt: run make gpu-bundle first" >&2; exit 2; }
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

echo "== GPU, driver, CUDA"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
"$PY" - <<'PYEOF' || exit 2
import sys, torch
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}")
if not torch.cuda.is_available():
    sys.exit("torch sees no CUDA device: nothing to check here")
print(torch.cuda.get_device_name(0), "compute capability %d.%d" % torch.cuda.get_device_capability(0))
PYEOF

echo "== dependencies from $BUNDLE/wheels"
"$PY" -m pip install --quiet --no-index --find-links "$BUNDLE/wheels" -r "$BUNDLE/requirements.txt" \
  || { echo "pip could not install the bundle's requirements offline (see above)" >&2; exit 2; }

echo "== GPU tests"
models=$(mktemp -d)
cp -r "$BUNDLE/models/." "$models/"
DENSENET_TEST_MODELS=$models timeout 240 "$PY" -m pytest -m gpu tests/gpu -p no:cacheprovider -q -rs \
  2>&1 | tee "$OUT/gpu_tests.log"
tests_rc=${PIPESTATUS[0]}

echo "== benchmark, parity, serving"
timeout 480 "$PY" -m service.bench.gpu_check "$OUT" --model-dir "$BUNDLE/models" \
  --digits "$BUNDLE/heldout_digits.npz" --tests-rc "$tests_rc"
check_rc=$?
echo "gpu tests: exit $tests_rc; gpu check: exit $check_rc; $SECONDS s in all"
[ "$tests_rc" -eq 0 ] && [ "$check_rc" -eq 0 ]
