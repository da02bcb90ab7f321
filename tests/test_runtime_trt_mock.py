"""The TensorRT backend's Python logic against stand-ins for tensorrt and cuda-python.

No GPU or TensorRT here: a fake ``tensorrt`` module whose "engines" run the numpy fake backend,
and a fake ``cuda.bindings.runtime`` whose device memory is host bytearrays. This checks what the
backend does itself: engine lookup (MODEL/engines/*.plan), plugin loading, name-based I/O, input
shapes, buffer allocation and the host/device copies, and the pipeline on top of it.
"""
import ctypes
import json
import os
import sys
import types

import numpy as np
import pytest

from runtime.backends import create_backend
from runtime.backends.fake import FakeBackend, fake_spec
from runtime.errors import ModelDirError
from runtime.contract import DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_INPUTS, ENCODER_OUTPUTS, FORMAT_VERSION
from runtime.pipeline import RunOptions, run_video
from runtime.samples import sample_video
from runtime.tracker import preset

ENC_IN = list(ENCODER_INPUTS)      # images, valid_hw
ENC_OUT = list(ENCODER_OUTPUTS)
DEC_IN = list(DECODER_INPUTS)      # the features + valid_hw
DEC_OUT = list(DECODER_OUTPUTS)


class FakeCudart(types.ModuleType):
    class cudaMemcpyKind:
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self):
        super().__init__("cuda.bindings.runtime")
        self.mem = {}            # ptr -> ctypes buffer
        self.copies = 0

    def cudaMalloc(self, n):
        buf = ctypes.create_string_buffer(n)
        ptr = ctypes.addressof(buf)
        self.mem[ptr] = buf
        return 0, ptr

    def cudaFree(self, ptr):
        self.mem.pop(int(ptr), None)
        return (0,)

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        assert kind in (1, 2)
        assert (int(dst) if kind == 1 else int(src)) in self.mem, "device pointer not allocated"
        ctypes.memmove(int(dst), int(src), int(n))
        self.copies += 1
        return (0,)

    def cudaStreamCreate(self):
        return 0, 1234

    def cudaStreamSynchronize(self, s):
        return (0,)

    def cudaStreamDestroy(self, s):
        return (0,)

    def cudaGetDeviceCount(self):
        return 0, 1

    def cudaGetDeviceProperties(self, i):
        return 0, types.SimpleNamespace(name=b"Fake GPU")


def make_trt(cudart, backend: FakeBackend, loaded):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.99-fake"

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class TensorIOMode:
        INPUT, OUTPUT = "in", "out"

    class Registry:
        def load_library(self, path):
            loaded.append(path)

    class Context:
        def __init__(self, eng):
            self.eng, self.shapes, self.addr, self.outs = eng, {}, {}, None

        def set_input_shape(self, name, shape):
            assert name in self.eng.inputs
            self.shapes[name] = tuple(shape)
            self.outs = None

        def _compute(self):
            if self.outs is None:
                feeds = {}
                for n in self.eng.inputs:
                    dt = self.eng.dtypes[n]
                    nbytes = int(np.prod(self.shapes[n])) * np.dtype(dt).itemsize
                    raw = ctypes.string_at(self.addr[n], nbytes)
                    feeds[n] = np.frombuffer(raw, dt).reshape(self.shapes[n]).copy()
                self.outs = (backend.encode(feeds["images"], feeds["valid_hw"]) if self.eng.kind == "enc"
                             else backend.decode(feeds))
            return self.outs

        def set_tensor_address(self, name, ptr):
            self.addr[name] = int(ptr)

        def get_tensor_shape(self, name):
            return self._compute()[name].shape

        def execute_async_v3(self, stream):
            for n, a in self._compute().items():
                if n not in self.eng.outputs:
                    continue                    # e.g. the fake's pred_queries, not an output of this engine
                a = np.ascontiguousarray(a, self.eng.dtypes[n])
                ctypes.memmove(self.addr[n], a.ctypes.data, a.nbytes)
            self.outs = None
            return True

    class Engine:
        def __init__(self, kind):
            self.kind = kind
            self.inputs = ENC_IN if kind == "enc" else DEC_IN
            self.outputs = ENC_OUT if kind == "enc" else DEC_OUT
            self.names = self.inputs + self.outputs
            self.dtypes = {n: (np.int64 if n in ("spatial_shapes", "level_start_index", "valid_hw") else np.float32)
                           for n in self.names}

        num_io_tensors = property(lambda self: len(self.names))

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, n):
            return TensorIOMode.INPUT if n in self.inputs else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, n):
            return self.dtypes[n]

        def is_shape_inference_io(self, n):           # shape tensors live in host memory
            return n in self.inputs and n in ("spatial_shapes", "level_start_index")

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return {b"ENC": Engine("enc"), b"DEC": Engine("dec")}.get(bytes(data))

    trt.Logger, trt.TensorIOMode, trt.Runtime = Logger, TensorIOMode, Runtime
    trt.init_libnvinfer_plugins = lambda logger, ns: True
    trt.get_plugin_registry = lambda: Registry()
    trt.nptype = lambda dt: dt
    return trt


@pytest.fixture
def fake_trt_env(monkeypatch, tmp_path):
    spec = fake_spec()
    model = tmp_path / "model"
    (model / "engines").mkdir(parents=True)
    meta = {"format_version": FORMAT_VERSION, "config": {}, "model_name": "fake", "num_frames": spec.num_frames,
            "num_queries": spec.num_queries, "num_classes": spec.num_classes, "class_names": list(spec.class_names),
            "embed_dim": spec.embed_dim, "mask_stride": 4,
            "preprocess": {"color": "RGB", "mean": list(spec.preprocess.mean), "std": list(spec.preprocess.std),
                           "shorter_side": 192, "max_size": 384, "size_divisibility": 32},
            "encoder": {"file": "encoder.onnx"}, "decoder": {"file": "decoder.onnx"}, "msda": "plugin",
            "dtype": "fp32"}
    (model / "export.json").write_text(json.dumps(meta))
    (model / "engines" / "encoder.plan").write_bytes(b"ENC")
    (model / "engines" / "decoder.plan").write_bytes(b"DEC")
    plugin = tmp_path / "libmdqe_trt_plugin.so"
    plugin.write_bytes(b"\x7fELF fake")
    cudart = FakeCudart()
    loaded = []
    cuda = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cudart
    cuda.bindings = bindings
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)
    inner = FakeBackend(spec=fake_spec())
    monkeypatch.setitem(sys.modules, "tensorrt", make_trt(cudart, inner, loaded))
    monkeypatch.setenv("MDQE_TRT_PLUGIN", str(plugin))
    return str(model), cudart, loaded, str(plugin)


def test_trt_backend_runs_the_pipeline(fake_trt_env, tmp_path):
    model, cudart, loaded, plugin = fake_trt_env
    b = create_backend("trt", model)
    assert loaded == [plugin]                                   # plugin library registered with TensorRT
    assert b.describe()["device"] == "Fake GPU"
    # engines with the four DEC_OUT outputs: track with pred_embeds (the --track-embedding fallback)
    f, tp = preset("ytvis", embedding="pred_embeds")
    opts = RunOptions(filter=f, tracker=tp, max_frames=8, progress=False)
    t = run_video(sample_video(), str(tmp_path / "trt"), b, opts)
    ref = run_video(sample_video(), str(tmp_path / "ref"), FakeBackend(), opts)
    assert t["frames"] == t["encoder_frames"] == 8 and t["backend"]["backend"] == "trt"
    with open(tmp_path / "trt" / "results.json") as f1, open(tmp_path / "ref" / "results.json") as f2:
        assert json.load(f1) == json.load(f2)                  # same outputs through device buffers
    assert cudart.copies > 0
    b.close()
    assert cudart.mem == {}                                     # buffers freed


def test_trt_backend_missing_engines(fake_trt_env):
    model, *_ = fake_trt_env
    os.remove(os.path.join(model, "engines", "decoder.plan"))
    with pytest.raises(ModelDirError, match="no TensorRT engine decoder.plan"):
        create_backend("trt", model)
