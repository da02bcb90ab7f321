#!/usr/bin/env bash
# Native code checks run by CI (owned by the kernels work, trt_plugins/):
#  1. CPU kernel + C++ tests under AddressSanitizer + UBSan (ctest); the post-processing kernels'
#     portable (non-x86) paths compiled with -Werror and their C++ tests run.
#  2. Release configure + build: CPU library, CUDA kernel compiled by nvcc for the default
#     architecture list (when nvcc is found), TensorRT plugin (only when TENSORRT_ROOT or a system
#     TensorRT is found; CMake says so otherwise), then ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
CMAKE="${CMAKE:-cmake}"
command -v "$CMAKE" >/dev/null || CMAKE=".venv/bin/cmake"   # the PyPI cmake wheel, if no system cmake
command -v "$CMAKE" >/dev/null || { echo "native checks need cmake (>= 3.20)" >&2; exit 1; }
CTEST="$(dirname "$(command -v "$CMAKE")")/ctest"

echo "== native: ASan+UBSan build of the CPU kernel and the C++ tests"
"$CMAKE" -S . -B build/ci-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMDQE_SANITIZE=ON -DMDQE_CUDA=OFF \
    -DMDQE_BUILD_TESTS=ON >/dev/null
"$CMAKE" --build build/ci-asan --parallel "$JOBS"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$CTEST" --test-dir build/ci-asan --output-on-failure

echo "== native: post-processing kernels without their x86 paths (as a non-x86 machine builds them) + C++ tests"
mkdir -p build
c++ -std=c++17 -O2 -Wall -Wextra -Werror -Wno-unused-parameter -DMDQE_PP_PORTABLE -ffp-contract=off -fno-trapping-math \
    -Itrt_plugins/include -Itrt_plugins/tests trt_plugins/src/postprocess_cpu.cpp trt_plugins/tests/test_postprocess_cpu.cpp \
    -o build/pp_portable_test
build/pp_portable_test

echo "== native: release build (CPU library, CUDA kernel when nvcc is found, plugin when TensorRT is found)"
mkdir -p build
if ! "$CMAKE" -S . -B build/ci-release -DCMAKE_BUILD_TYPE=Release -DMDQE_BUILD_TESTS=ON \
        ${TENSORRT_ROOT:+-DTENSORRT_ROOT="$TENSORRT_ROOT"} >build/ci-release-configure.log 2>&1; then
    cat build/ci-release-configure.log >&2
    exit 1
fi
grep -E "^-- MDQE" build/ci-release-configure.log || true
"$CMAKE" --build build/ci-release --parallel "$JOBS"
if command -v nvcc >/dev/null && [ ! -f build/ci-release/libmdqe_msda_cuda.a ]; then
    echo "nvcc is on PATH but the CUDA kernel was not built" >&2
    exit 1
fi
"$CTEST" --test-dir build/ci-release --output-on-failure
echo "native checks passed"
