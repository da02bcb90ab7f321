"""Build hook: `pip install .` / `pip install -e .` build the MSDeformAttn CPU library
libmdqe_msda.so with CMake (target mdqe_msda only: C++, no CUDA) and place it in
runtime/native/ (inside the wheel, or next to the sources for editable installs).
Project metadata lives in pyproject.toml. The CUDA kernel, the TensorRT plugin and the C++
tests are built with CMake directly (see docs/native.md).

Environment: MDQE_CMAKE_ARGS (extra CMake arguments), CMAKE_BUILD_PARALLEL_LEVEL (jobs, default 2).
"""
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
LIB_EXT_NAME = "runtime.native.libmdqe_msda"
LIB_FILE = "libmdqe_msda.so"


class CMakeLibrary(Extension):
    """A shared library built by the top-level CMakeLists.txt (not a Python extension module)."""

    def __init__(self, name, target, library_file):
        super().__init__(name, sources=[])
        self.target = target
        self.library_file = library_file


def _cmake_executable():
    found = shutil.which("cmake")
    if found:
        return found
    try:  # the `cmake` wheel of pyproject's build requirements
        import cmake
        return str(Path(cmake.CMAKE_BIN_DIR) / "cmake")
    except ImportError:
        raise RuntimeError("CMake is needed to build libmdqe_msda.so: `pip install cmake` or install it "
                           "with your system's package manager") from None


class CMakeBuild(build_ext):
    def get_ext_filename(self, fullname):
        # Called with the full dotted name and (by get_ext_fullpath) with its last part only.
        if fullname in (LIB_EXT_NAME, LIB_EXT_NAME.rsplit(".", 1)[-1]):
            return os.path.join(*fullname.split(".")[:-1], LIB_FILE)
        return super().get_ext_filename(fullname)

    def build_extension(self, ext):
        if not isinstance(ext, CMakeLibrary):
            return super().build_extension(ext)
        if not sys.platform.startswith("linux"):
            raise RuntimeError(f"building {ext.library_file} is supported on Linux only (found {sys.platform})")
        cmake = _cmake_executable()
        build_dir = Path(self.build_temp).resolve() / "cmake"
        build_dir.mkdir(parents=True, exist_ok=True)
        configure = [cmake, "-S", str(ROOT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                     "-DMDQE_CUDA=OFF", "-DMDQE_TRT_PLUGIN=OFF", "-DMDQE_BUILD_TESTS=OFF"]
        configure += shlex.split(os.environ.get("MDQE_CMAKE_ARGS", ""))
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "2")
        build = [cmake, "--build", str(build_dir), "--target", ext.target, "--parallel", jobs]
        for cmd in (configure, build):
            print("+", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
        built = build_dir / ext.library_file
        if not built.is_file():
            raise RuntimeError(f"CMake finished but {built} does not exist")
        dest = Path(self.get_ext_fullpath(ext.name))
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built, dest)
        print(f"built {dest}", flush=True)


setup(
    ext_modules=[CMakeLibrary(LIB_EXT_NAME, target="mdqe_msda", library_file=LIB_FILE)],
    cmdclass={"build_ext": CMakeBuild},
)
