"""ONNX Runtime backend.

Providers: CPU by default; ``providers="auto"`` picks CUDA when the
installed onnxruntime has it, then CPU; TensorRT's EP only when asked for
by name (``providers=["TensorrtExecutionProvider", ...]``). Plugin-form
and trt-builtin graphs (export.json ``"msda": "plugin"`` / ``"trt-builtin"``) run
through the onnxruntime-extensions Python ops of ``runtime/native/ort_ops.py``
(torch-free; the MSDeformAttn node then runs our native CPU kernel). The pure-ONNX
forms ("onnx", "gridsample") run in plain ONNX Runtime.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import BackendUnavailableError, ModelDirError, PluginLibraryError
from ..contract import (CPU_KERNEL_LIBRARY, DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_INPUTS, ENCODER_OUTPUTS,
                        MSDA_ORT_CPU_FASTEST, MSDA_ORT_CPU_FASTEST_PLAIN, VALID_HW, ModelSpec, plugin_identity)
from ..model_dir import check_graph_io, check_tensor_names, load_model_dir, require_graph_files
from .base import Backend, valid_hw_or_full

_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
             "tensor(int32)": np.int32, "tensor(double)": np.float64}


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise BackendUnavailableError("backend 'ort' needs onnxruntime (pip install onnxruntime)") from e
    return ort


def custom_node_support() -> Optional[str]:
    """None when plugin / trt-builtin graphs run fast in ONNX Runtime here (onnx and
    onnxruntime-extensions importable, native MSDeformAttn CPU kernel built), else why not."""
    import importlib.util
    for mod in ("onnx", "onnxruntime_extensions"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed"
    try:
        from ..native import msda
        if not msda.is_available():
            return f"the native MSDeformAttn kernel (runtime/native/{CPU_KERNEL_LIBRARY}) is not built"
    except ImportError as e:
        return f"runtime.native is unavailable ({e})"
    return None


def ort_cpu_form() -> Tuple[str, str]:
    """(form, reason): the MSDeformAttn export form this runtime runs fastest with ONNX Runtime on
    the CPU - ``MSDA_ORT_CPU_FASTEST`` (measured by ``python -m benchmarks.msda_forms``) when what
    it needs is here, else the fastest plain-ONNX form. The demo exports this form."""
    ident = plugin_identity(MSDA_ORT_CPU_FASTEST)
    if ident is None:
        return MSDA_ORT_CPU_FASTEST, "fastest in ONNX Runtime on the CPU (benchmarks/msda_forms.py)"
    missing = custom_node_support()
    if missing is None:
        return MSDA_ORT_CPU_FASTEST, ("fastest in ONNX Runtime on the CPU (benchmarks/msda_forms.py): the native "
                                      "kernel as an onnxruntime-extensions op")
    return MSDA_ORT_CPU_FASTEST_PLAIN, (f"fastest plain-ONNX form in ONNX Runtime on the CPU; {MSDA_ORT_CPU_FASTEST!r} "
                                        f"would be faster but {missing}")


def resolve_providers(providers: Union[None, str, Sequence[str]], available: Sequence[str]) -> List[str]:
    """Provider list for a session: None/"cpu" -> CPU; "auto" -> CUDA (if available) + CPU;
    a comma-separated string or list -> as given (each must be available)."""
    if providers is None or providers == "cpu":
        return ["CPUExecutionProvider"]
    if providers == "auto":
        return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    if isinstance(providers, str):
        providers = [p.strip() for p in providers.split(",") if p.strip()]
    names = []
    for p in providers:
        full = p if p.endswith("ExecutionProvider") else {"cpu": "CPU", "cuda": "CUDA", "trt": "Tensorrt",
                                                          "tensorrt": "Tensorrt"}.get(p.lower(), p) + "ExecutionProvider"
        if full not in available:
            raise BackendUnavailableError(f"ONNX Runtime provider {full} is not available in this onnxruntime "
                                          f"build (available: {', '.join(available)})")
        names.append(full)
    if "CPUExecutionProvider" not in names:
        names.append("CPUExecutionProvider")
    return names


class OrtBackend(Backend):
    """Runs encoder.onnx / decoder.onnx with ONNX Runtime.

    ``providers``: see resolve_providers; ``threads``: intra-op threads (0 = ORT default).
    """

    kind = "ort"

    def __init__(self, model_dir: str, providers: Union[None, str, Sequence[str]] = None, threads: int = 0,
                 spec: Optional[ModelSpec] = None):
        spec = spec or load_model_dir(model_dir)
        require_graph_files(spec)
        super().__init__(spec)
        ort = _import_ort()
        self.providers = resolve_providers(providers, ort.get_available_providers())
        self.encoder = self._session(ort, spec.encoder_path, threads)
        self.decoder = self._session(ort, spec.decoder_path, threads)
        for sess, inputs, outputs, what in ((self.encoder, ENCODER_INPUTS, ENCODER_OUTPUTS, "encoder.onnx"),
                                            (self.decoder, DECODER_INPUTS, DECODER_OUTPUTS, "decoder.onnx")):
            check_tensor_names([i.name for i in sess.get_inputs()], inputs, f"{what} inputs")
            check_tensor_names([o.name for o in sess.get_outputs()], outputs, f"{what} outputs")
            check_graph_io(spec, what.split(".")[0], {i.name: i.shape for i in sess.get_inputs()},
                           {o.name: o.shape for o in sess.get_outputs()}, what)
        self._enc_in = {i.name: _NP_TYPES.get(i.type, np.float32) for i in self.encoder.get_inputs()}
        self._dec_in = {i.name: _NP_TYPES.get(i.type, np.float32) for i in self.decoder.get_inputs()}
        self._enc_out = [o.name for o in self.encoder.get_outputs()]
        self._dec_out = [o.name for o in self.decoder.get_outputs()]

    def _session(self, ort, path: str, threads: int):
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
        so.log_severity_level = 3
        try:
            ident = plugin_identity(self.spec.msda)
            if ident is not None:
                try:
                    from ..native.ort_ops import create_session
                except ImportError as e:
                    raise PluginLibraryError(
                        f"{path} is a {self.spec.msda}-form graph ({ident.op_type} nodes); running it in ONNX Runtime "
                        f"needs onnx and onnxruntime-extensions ({e}). "
                        "Re-export with --msda onnx for plain ONNX Runtime.") from e
                try:
                    return create_session(path, providers=self.providers, sess_options=so)
                except ImportError as e:
                    raise PluginLibraryError(f"cannot run plugin-form graph {path}: {e}") from e
            return ort.InferenceSession(path, sess_options=so, providers=self.providers)
        except (PluginLibraryError, BackendUnavailableError):
            raise
        except Exception as e:  # ORT raises its own exception types (InvalidGraph, Fail, ...)
            msg = str(e)
            first = msg.splitlines()[0] if msg else repr(e)
            low = msg.lower()
            if "no op registered" in low or "not a registered function" in low or "unregistered" in low:
                raise PluginLibraryError(f"ONNX Runtime cannot run {path}: a custom op (MSDeformAttn) is not "
                                         f"registered ({first})") from e
            if ident is not None and ident.op_type in msg:
                raise ModelDirError(f"ONNX Runtime rejects the MSDeformAttn node of {path} - is the graph from an "
                                    f"older export? re-export it ({first})") from e
            raise ModelDirError(f"ONNX Runtime cannot load {path}: {first}") from e

    @staticmethod
    def _feed(types: Dict[str, type], arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return {n: np.ascontiguousarray(arrays[n], dtype=t) for n, t in types.items()}

    def encode(self, images: np.ndarray, valid_hw: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
        valid_hw = valid_hw_or_full(images, valid_hw)
        outs = self.encoder.run(self._enc_out, self._feed(self._enc_in, {"images": images, VALID_HW: valid_hw}))
        out = dict(zip(self._enc_out, outs))
        out[VALID_HW] = valid_hw
        return out

    def decode(self, feats: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        outs = self.decoder.run(self._dec_out, self._feed(self._dec_in, feats))
        return {n: np.asarray(o, dtype=np.float32) for n, o in zip(self._dec_out, outs)}

    def describe(self) -> Dict[str, str]:
        dev = "cuda" if self.providers[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else "cpu"
        return {"backend": "ort", "device": dev, "providers": ",".join(self.providers),
                "msda": self.spec.msda, "dtype": self.spec.dtype}
