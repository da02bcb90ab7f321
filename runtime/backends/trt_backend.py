"""TensorRT backend: serialized engines + our MSDeformAttn plugin library.

Needs ``tensorrt`` (10.x or newer; I/O by tensor name, ``execute_async_v3``)
and ``cuda-python`` (``cuda.bindings.runtime`` or the older ``cuda.cudart``)
for device memory. Engines are built from the exported graphs by
``export/build_engines.py``; they are looked up as ``encoder.plan`` /
``decoder.plan`` (or ``.engine``) in ``engine_dir`` (default: ``MODEL/engines``,
where build_engines.py writes them, then the model directory). Plugin-form engines need ``libmdqe_trt_plugin.so``: ``plugin_lib``
option, env ``MDQE_TRT_PLUGIN``, the model directory, ``build/``,
``build/trt_plugins/``, ``trt_plugins/build/``.
"""
from __future__ import annotations

import ctypes
import os
from typing import Dict, List, Optional

import numpy as np

from ..errors import BackendUnavailableError, ModelDirError, PluginLibraryError
from ..contract import (DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_INPUTS, ENCODER_OUTPUTS, OUR_PLUGIN, VALID_HW,
                        ModelSpec, plugin_identity)
from ..model_dir import check_tensor_names, load_model_dir
from .base import Backend, valid_hw_or_full

PLUGIN_LIBRARY = OUR_PLUGIN.library
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def plugin_search_paths(model_dir: Optional[str]) -> List[str]:
    """Where the plugin library is looked for, in order (env MDQE_TRT_PLUGIN first)."""
    paths = []
    env = os.environ.get("MDQE_TRT_PLUGIN")
    if env:
        paths.append(env)
    if model_dir:
        paths.append(os.path.join(model_dir, PLUGIN_LIBRARY))
    for sub in ("build", os.path.join("build", "trt_plugins"), os.path.join("trt_plugins", "build")):
        paths.append(os.path.join(_REPO, sub, PLUGIN_LIBRARY))
    return paths


def find_plugin_library(explicit: Optional[str], model_dir: Optional[str]) -> str:
    """Return the path of libmdqe_trt_plugin.so or raise PluginLibraryError listing where it looked."""
    if explicit:
        if not os.path.isfile(explicit):
            raise PluginLibraryError(f"TensorRT plugin library not found: {explicit}")
        return explicit
    tried = plugin_search_paths(model_dir)
    for p in tried:
        if os.path.isfile(p):
            return p
    raise PluginLibraryError(
        f"TensorRT plugin library {PLUGIN_LIBRARY} not found (build it with CMake in trt_plugins/, or pass "
        "--plugin-lib / set MDQE_TRT_PLUGIN). Looked in: " + ", ".join(tried))


def load_plugin_library(path: str, trt=None) -> None:
    """Register the plugin library's creators with TensorRT (``IPluginRegistry.load_library``, which
    calls its ``getCreators``); without TensorRT bindings that have it, dlopen it globally."""
    if trt is not None:
        registry = trt.get_plugin_registry()
        if hasattr(registry, "load_library"):
            try:
                registry.load_library(path)
                return
            except Exception:  # a library without getCreators: fall back to static registration
                pass
    try:
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        raise PluginLibraryError(f"cannot load TensorRT plugin library {path}: {e}") from e


def _import_cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as e:
            raise BackendUnavailableError("backend 'trt' needs cuda-python (pip install cuda-python)") from e
    return cudart


def _check(result):
    err = result[0]
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return result[1] if len(result) == 2 else result[1:]


class _Engine:
    """One deserialized engine with grow-only device buffers."""

    def __init__(self, trt, cudart, runtime, path: str, inputs, outputs, what: str):
        with open(path, "rb") as f:
            self.engine = runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise ModelDirError(f"TensorRT cannot deserialize {path} (built with another TensorRT version or "
                                "GPU? rebuild with export/build_engines.py)")
        self.trt, self.cudart = trt, cudart
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        check_tensor_names(self.inputs, inputs, f"{what} inputs")
        check_tensor_names(self.outputs, outputs, f"{what} outputs")
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        shape_io = getattr(self.engine, "is_shape_inference_io", None)
        self.host_inputs = {n for n in self.inputs if shape_io is not None and shape_io(n)}
        self.buffers: Dict[str, tuple] = {}   # name -> (ptr, nbytes)
        self.stream = _check(cudart.cudaStreamCreate())

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, cap = self.buffers.get(name, (0, 0))
        if cap < nbytes:
            if ptr:
                _check((self.cudart.cudaFree(ptr)[0], None))
            ptr = _check(self.cudart.cudaMalloc(max(nbytes, 1)))
            self.buffers[name] = (ptr, nbytes)
        return int(ptr)

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        cudart = self.cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        host = {}
        for n in self.inputs:
            a = np.ascontiguousarray(feeds[n], dtype=self.dtypes[n])
            host[n] = a                                  # kept alive until the stream is synchronised
            self.context.set_input_shape(n, a.shape)
            if n in self.host_inputs:                    # shape tensors are read from host memory
                self.context.set_tensor_address(n, a.ctypes.data)
                continue
            ptr = self._buffer(n, a.nbytes)
            _check((cudart.cudaMemcpyAsync(ptr, a.ctypes.data, a.nbytes, h2d, self.stream)[0], None))
            self.context.set_tensor_address(n, ptr)
        outs = {}
        for n in self.outputs:
            shape = tuple(self.context.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                raise RuntimeError(f"TensorRT could not infer the shape of output {n}: {shape}")
            outs[n] = np.empty(shape, self.dtypes[n])
            self.context.set_tensor_address(n, self._buffer(n, outs[n].nbytes))
        if not self.context.execute_async_v3(self.stream):
            raise RuntimeError("TensorRT execution failed")
        for n, a in outs.items():
            _check((cudart.cudaMemcpyAsync(a.ctypes.data, self.buffers[n][0], a.nbytes, d2h, self.stream)[0], None))
        _check((cudart.cudaStreamSynchronize(self.stream)[0], None))
        del host
        return outs

    def close(self):
        for ptr, _ in self.buffers.values():
            self.cudart.cudaFree(ptr)
        self.buffers.clear()
        if self.stream is not None:
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None


def _find_engine(dirs: List[str], stem: str) -> str:
    """First of DIR/<stem>.plan, DIR/<stem>.engine over ``dirs``."""
    for d in dirs:
        for ext in (".plan", ".engine"):
            p = os.path.join(d, stem + ext)
            if os.path.isfile(p):
                return p
    raise ModelDirError(f"no TensorRT engine {stem}.plan / {stem}.engine in {' or '.join(dirs)} "
                        "(build them with `python export/build_engines.py --model DIR`)")


class TrtBackend(Backend):
    """Runs TensorRT engines built from encoder.onnx / decoder.onnx."""

    kind = "trt"

    def __init__(self, model_dir: str, plugin_lib: Optional[str] = None, engine_dir: Optional[str] = None,
                 spec: Optional[ModelSpec] = None, **_ignored):
        spec = spec or load_model_dir(model_dir)
        super().__init__(spec)
        try:
            import tensorrt as trt
        except ImportError as e:
            raise BackendUnavailableError(
                "backend 'trt' needs the TensorRT Python package (tensorrt >= 10) and a CUDA GPU; it is not "
                "installed here. Use --backend ort (CPU/CUDA) or --backend torch.") from e
        cudart = _import_cudart()
        err, count = cudart.cudaGetDeviceCount()
        if int(err) != 0 or count < 1:
            raise BackendUnavailableError("backend 'trt' needs a CUDA GPU; none is visible")
        self.logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(self.logger, "")
        self.plugin_lib = None
        ident = plugin_identity(spec.msda)   # trt-builtin: libnvinfer_plugin, initialised above
        if ident is not None and ident.needs_plugin_library:
            self.plugin_lib = find_plugin_library(plugin_lib, spec.model_dir)
            load_plugin_library(self.plugin_lib, trt)
        dirs = [engine_dir] if engine_dir else [os.path.join(spec.model_dir, "engines"), spec.model_dir]
        runtime = trt.Runtime(self.logger)
        self.encoder = _Engine(trt, cudart, runtime, _find_engine(dirs, "encoder"),
                               ENCODER_INPUTS, ENCODER_OUTPUTS, "encoder engine")
        self.decoder = _Engine(trt, cudart, runtime, _find_engine(dirs, "decoder"),
                               DECODER_INPUTS, DECODER_OUTPUTS, "decoder engine")
        self._gpu = cudart.cudaGetDeviceProperties(0)[1].name
        self._gpu = self._gpu.decode() if isinstance(self._gpu, bytes) else str(self._gpu)
        self._trt_version = trt.__version__

    def encode(self, images: np.ndarray, valid_hw: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
        valid_hw = valid_hw_or_full(images, valid_hw)
        out = self.encoder.run({"images": images, VALID_HW: valid_hw})
        out[VALID_HW] = valid_hw
        return out

    def decode(self, feats: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return {n: a.astype(np.float32, copy=False) for n, a in self.decoder.run(feats).items()}

    def describe(self) -> Dict[str, str]:
        return {"backend": "trt", "device": self._gpu, "tensorrt": self._trt_version,
                "plugin_lib": self.plugin_lib or "", "dtype": self.spec.dtype}

    def close(self) -> None:
        for e in (getattr(self, "encoder", None), getattr(self, "decoder", None)):
            if e is not None:
                e.close()
