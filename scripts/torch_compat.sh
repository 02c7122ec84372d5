#!/usr/bin/env bash
# The project under another PyTorch than the pinned one, on this machine's CPU: a GPU machine
# brings its own torch (2.11 or newer), and scripts/gpu_check.sh serves with whatever it finds.
#   1. makes a virtual environment .venv-torch-VERSION with torch==VERSION from PyPI, the
#      torchvision release made for it (pip picks it: each pins its torch exactly), and the
#      project's other dependencies, unpinned from torch;
#   2. runs the unit tier, then the GPU check's CPU rehearsal and the GPU tests (which skip
#      without CUDA) against it.
# Usage: scripts/torch_compat.sh [VERSION]       (default 2.11.0; PyPI's Linux wheels carry
# CUDA's libraries: about 5 GB to download the first time)
set -euo pipefail
VERSION=${1:-2.11.0}
cd "$(dirname "$0")/.."
VENV=.venv-torch-$VERSION
PY=${PYTHON:-python3.11}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# The build and dev extras, minus this project's own extras (they pin torch) and the tools that
# only lint or deploy.
deps=$("$VENV/bin/python" - <<'PYEOF'
import tomllib
extras = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]
skip = ("densenet-serving", "ruff", "mypy", "hadolint", "kubectl", "kubernetes-validate", "check-jsonschema")
wanted = [*extras["onnx"], *extras["build"], *extras["plan"], *extras["loadtest"], *extras["dev"]]
print("\n".join(sorted({d for d in wanted if not d.startswith(skip)})))
PYEOF
)
mapfile -t deps <<<"$deps"
"$VENV/bin/pip" install --quiet "torch==$VERSION" torchvision "${deps[@]}"
"$VENV/bin/pip" install --quiet --no-deps -e .
"$VENV/bin/python" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/unit
DENSENET_TEST_MODELS=${DENSENET_TEST_MODELS:-$(mktemp -d)} \
  "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/e2e/test_gpu_check.py tests/gpu
