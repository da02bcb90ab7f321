#!/usr/bin/env bash
# The prepared GPU check in one command (docs/gpu.md). On a bare GPU machine with PyTorch CUDA and nvcc:
#   bash benchmarks/gpu_suite.sh [extra python -m benchmarks.gpu_suite flags]
# Installs carried wheels from .whl/ (if any) into /tmp/site, then runs every stage; results under
# --output (default gpu_suite_out, or /tmp/mdqe_gpu_suite bundled into $OUT when $OUT is set).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "installing the carried wheels failed" >&2; exit 2; }
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# the CPU kernel for the runtime / tests (the CMake build of the suite rebuilds it with the CUDA kernel)
if [ ! -f runtime/native/libmdqe_msda.so ] && command -v cmake >/dev/null; then
    cmake -S . -B build/cpu -DCMAKE_BUILD_TYPE=Release -DMDQE_CUDA=OFF -DMDQE_BUILD_TESTS=OFF >/dev/null \
        && cmake --build build/cpu --parallel "$(nproc)" >/dev/null \
        && cp build/cpu/libmdqe_msda.so runtime/native/ || echo "warning: CPU kernel build failed" >&2
fi
exec "$PY" -m benchmarks.gpu_suite "$@"
