"""What the served code is: the project's version and the versions of the libraries that
answer a request, for ``GET /model`` and the ``densenet_build_info`` gauge (a dashboard can
then show which versions each revision runs, as the image's SBOM lists them)."""

from __future__ import annotations

import platform
from functools import cache
from importlib.metadata import PackageNotFoundError, version

from service import __version__

# The libraries every server runs, whatever its runtime.
SERVING_LIBRARIES = ("fastapi", "starlette", "uvicorn", "pydantic", "numpy", "pillow")
# The distribution behind each runtime.
RUNTIME_LIBRARIES = {
    "torch": "torch",
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
    "tensorrt": "torch-tensorrt",
}


def installed(distribution: str) -> str:
    """``distribution``'s installed version, or "not installed"."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


@cache
def build_info(runtime: str) -> dict[str, str]:
    """The project's version, Python's, the runtime library's and the serving libraries'."""
    library = RUNTIME_LIBRARIES.get(runtime, runtime)
    return {
        "version": __version__,
        "python": platform.python_version(),
        "runtime": runtime,
        "runtime_library": library,
        "runtime_version": installed(library),
        **{name: installed(name) for name in SERVING_LIBRARIES},
    }
