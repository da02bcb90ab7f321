"""Run custom-node graphs (``--msda plugin`` and ``--msda trt-builtin``) in ONNX Runtime. Torch-free.

The exported ``--msda plugin`` graphs carry one node per MSDeformAttn call in domain ``mdqe``
with op_type ``MDQEMSDeformAttn`` (what the TensorRT ONNX parser maps to our plugin); the
``--msda trt-builtin`` graphs carry NVIDIA's ``MultiscaleDeformableAttnPlugin_TRT`` nodes
(domain ``trt.plugins``, output ``[N, Lq, M, D]``). Identities: ``runtime.contract``. ONNX
Runtime pip wheels cannot load C custom ops without headers, so both run here as
onnxruntime-extensions Python ops that call the native CPU kernel
(``runtime/native/msda.py: ms_deform_attn_cpu``) - the same numbers for both node kinds.
Used at run time by ``runtime.backends.ort_backend`` and ``runtime.serving.python_models``, and by
the exporter's verification (``export/verify.py``).
onnxruntime-extensions serves Python ops only in its own domain ``ai.onnx.contrib``;
:func:`prepare_for_ort` therefore rewrites the domain of the custom nodes in an in-memory copy
(the file on disk keeps the domain that TensorRT sees). onnxruntime-extensions Python ops cannot take float16 tensors, so in that
copy an fp16 plugin node becomes Cast(fp16->fp32) -> fp32 op -> Cast(fp32->fp16): the same
numbers as the plugin's fp16 contract (fp16 in/out, fp32 accumulation).

Runtime usage (no torch)::

    from runtime.native.ort_ops import create_session
    sess = create_session("DIR/decoder.onnx", providers=["CPUExecutionProvider"])
    outs = sess.run(None, feeds)

``create_session(model, providers=None, sess_options=None, intra_op_num_threads=0)``
accepts a path or an ``onnx.ModelProto`` and works for plugin-form and onnx-form graphs alike
(onnx-form graphs are passed through untouched).

If the native kernel library is not built, the numpy kernel ``runtime.native.msda_numpy`` is used
instead, with a ``RuntimeWarning`` (correct, but slow: a Python loop over levels).
"""
from __future__ import annotations

import copy
import os
import threading
import warnings
from typing import Optional, Sequence, Union

import numpy as np

from ..contract import OUR_PLUGIN, TRT_BUILTIN_PLUGIN
from .msda_numpy import ms_deform_attn_numpy

PLUGIN_OP_TYPE = OUR_PLUGIN.op_type
PLUGIN_DOMAIN = OUR_PLUGIN.onnx_domain
BUILTIN_OP_TYPE = TRT_BUILTIN_PLUGIN.op_type
BUILTIN_DOMAIN = TRT_BUILTIN_PLUGIN.onnx_domain
CUSTOM_NODES = {(PLUGIN_DOMAIN, PLUGIN_OP_TYPE), (BUILTIN_DOMAIN, BUILTIN_OP_TYPE)}   # (domain, op_type)
ORT_DOMAIN = "ai.onnx.contrib"           # the only domain onnxruntime-extensions Python ops are served in
ORT_OP_FP32 = PLUGIN_OP_TYPE

_LOCK = threading.Lock()
_REGISTERED = False
_FAST_OUTPUT = False      # our ops hand their output to ONNX Runtime as a numpy array (see _install_fast_hook)
_KERNEL = None
_KERNEL_NAME = None


# ----------------------------------------------------------------------------------------------
# kernel: the native CPU library, else the numpy fallback (runtime/native/msda_numpy.py)
# ----------------------------------------------------------------------------------------------
def _native_kernel():
    from . import msda  # torch-free ctypes binding
    if not msda.is_available():
        return None
    return msda.ms_deform_attn_cpu


def kernel_name() -> str:
    """"native" (runtime/native libmdqe_msda.so) or "numpy" (slow reference fallback)."""
    _get_kernel()
    return _KERNEL_NAME


def _get_kernel():
    global _KERNEL, _KERNEL_NAME
    if _KERNEL is None:
        fn = None if os.environ.get("MDQE_ORT_MSDA_KERNEL") == "numpy" else _native_kernel()
        if fn is not None:
            _KERNEL, _KERNEL_NAME = fn, "native"
        else:
            warnings.warn("MDQEMSDeformAttn: the native CPU kernel (libmdqe_msda.so, runtime/native/msda.py) "
                          "is not available; using the slow numpy reference kernel", RuntimeWarning, stacklevel=3)
            _KERNEL, _KERNEL_NAME = ms_deform_attn_numpy, "numpy"
    return _KERNEL


def _run(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    fn = _get_kernel()
    out = fn(np.ascontiguousarray(value, dtype=np.float32), np.ascontiguousarray(spatial_shapes, dtype=np.int64),
             np.ascontiguousarray(level_start_index, dtype=np.int64),
             np.ascontiguousarray(sampling_locations, dtype=np.float32),
             np.ascontiguousarray(attention_weights, dtype=np.float32))
    return np.asarray(out, dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# registration with onnxruntime-extensions
# ----------------------------------------------------------------------------------------------
def register_ops() -> str:
    """Register the Python ops (once per process); returns the extensions library path to pass to
    ``SessionOptions.register_custom_ops_library``."""
    global _REGISTERED
    try:
        from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op
    except ImportError as e:  # pragma: no cover - dependency of the package
        raise ImportError("running plugin-form graphs in ONNX Runtime needs onnxruntime-extensions "
                          "(pip install onnxruntime-extensions)") from e
    with _LOCK:
        if not _REGISTERED:
            f32, i32, s = PyCustomOpDef.dt_float, PyCustomOpDef.dt_int32, PyCustomOpDef.dt_string
            attrs = {"plugin_version": s, "plugin_namespace": s, "num_heads": PyCustomOpDef.dt_int64,
                     "head_dim": PyCustomOpDef.dt_int64}

            # spatial_shapes / level_start_index are INT32 at the node, as the TensorRT plugin takes them
            @onnx_op(op_type=ORT_OP_FP32, inputs=[f32, i32, i32, f32, f32], outputs=[f32], attrs=attrs)
            def _msda_fp32(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                           num_heads=0, head_dim=0, **_attrs):
                if (num_heads and value.shape[2] != num_heads) or (head_dim and value.shape[3] != head_dim):
                    raise ValueError(f"{PLUGIN_OP_TYPE}: value {value.shape} does not match num_heads={num_heads}, "
                                     f"head_dim={head_dim}")
                return _run(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)

            # NVIDIA's MultiscaleDeformableAttnPlugin_TRT: no plugin fields, output [N, Lq, M, D]
            @onnx_op(op_type=BUILTIN_OP_TYPE, inputs=[f32, i32, i32, f32, f32], outputs=[f32],
                     attrs={"plugin_version": s, "plugin_namespace": s})
            def _msda_builtin(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                              **_attrs):
                out = _run(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
                return out.reshape(value.shape[0], sampling_locations.shape[1], value.shape[2], value.shape[3])

            _install_fast_hook({_msda_fp32._id, _msda_builtin._id})
            _REGISTERED = True
        return get_library_path()


def _install_fast_hook(op_ids) -> None:
    """Make our ops' output transfer cheap. onnxruntime-extensions (0.15) calls every Python op through
    one hook, ``_ocos._on_pyop_invocation``, which hands the output back as ``rv.flatten().tolist()``:
    a Python float object per element, ~90 ms for one R50 encoder MSDA output ([1, 5100, 256]),
    7x the kernel itself. Its C++ side reads any sequence, so for our op ids the hook below returns
    the flat float32 numpy array (the same values, no Python list); other Python ops in the process
    keep the package's own hook. Without the private names (another onnxruntime-extensions
    version) nothing changes and ``fast_output()`` says so."""
    global _FAST_OUTPUT
    try:
        from onnxruntime_extensions import PyCustomOpDef
        from onnxruntime_extensions import _ocos
        default_hook, registry = _ocos._on_pyop_invocation, _ocos.Opdef._odlist
    except (ImportError, AttributeError):  # pragma: no cover - other package layout
        return
    ids = frozenset(op_ids)

    def _hook(k_id, feed, attributes):
        if k_id not in ids:
            return default_hook(k_id, feed, attributes)
        op_ = registry[k_id]
        rv = op_.body(*feed, **op_.cast_attributes(attributes))
        return (k_id, rv.shape, np.ascontiguousarray(rv, dtype=np.float32).reshape(-1))

    PyCustomOpDef.install_hooker(_hook)
    _FAST_OUTPUT = True


def fast_output() -> bool:
    """True when our Python ops return their output to ONNX Runtime without a Python list."""
    return _FAST_OUTPUT


def elem_types(model) -> dict:
    """name -> onnx elem_type for graph inputs, initializers and value_info (best effort)."""
    types = {}
    g = model.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    return types


def has_fp16(model) -> bool:
    """True when the graph computes in float16 (fp16 initializers or Casts to float16)."""
    if any(i.data_type == 10 for i in model.graph.initializer):
        return True
    for n in model.graph.node:
        if n.op_type == "Cast" and any(a.name == "to" and a.i == 10 for a in n.attribute):
            return True
    return False


def count_plugin_nodes(model) -> int:
    """Number of MSDeformAttn custom nodes (our plugin's or NVIDIA's) in the main graph."""
    return sum(1 for n in model.graph.node if (n.domain, n.op_type) in CUSTOM_NODES)


def prepare_for_ort(model):
    """Return an in-memory copy of ``model`` (onnx.ModelProto) whose plugin nodes run in ONNX Runtime
    through the Python op; the input is not modified. Models without plugin nodes come back unchanged."""
    import onnx

    if count_plugin_nodes(model) == 0:
        return model
    m = copy.deepcopy(model)
    types = elem_types(m)
    if any(n.input[0] not in types for n in m.graph.node if (n.domain, n.op_type) in CUSTOM_NODES):
        try:
            types = elem_types(onnx.shape_inference.infer_shapes(m))
        except Exception:
            pass
    new_nodes = []
    for node in m.graph.node:
        if (node.domain, node.op_type) not in CUSTOM_NODES:
            new_nodes.append(node)
            continue
        et = types.get(node.input[0], onnx.TensorProto.FLOAT)
        node.domain = ORT_DOMAIN
        if et == onnx.TensorProto.FLOAT:
            new_nodes.append(node)
        elif et == onnx.TensorProto.FLOAT16:
            for i in (0, 3, 4):
                src = node.input[i]
                dst = f"{src}__ort_fp32_{node.name or id(node)}_{i}"
                new_nodes.append(onnx.helper.make_node("Cast", [src], [dst], to=onnx.TensorProto.FLOAT))
                node.input[i] = dst
            out = node.output[0]
            tmp = f"{out}__ort_fp32"
            node.output[0] = tmp
            new_nodes.append(node)
            new_nodes.append(onnx.helper.make_node("Cast", [tmp], [out], to=onnx.TensorProto.FLOAT16))
        else:
            raise ValueError(f"{node.op_type} node {node.name!r}: value must be float32 or float16, "
                             f"got ONNX elem_type {et}")
    del m.graph.node[:]
    m.graph.node.extend(new_nodes)
    kept = [op for op in m.opset_import if op.domain not in (PLUGIN_DOMAIN, BUILTIN_DOMAIN, ORT_DOMAIN)]
    del m.opset_import[:]
    m.opset_import.extend(kept)
    m.opset_import.add(domain=ORT_DOMAIN, version=1)
    return m


def create_session(model: Union[str, os.PathLike, "onnx.ModelProto"], providers: Optional[Sequence] = None,  # noqa: F821
                   sess_options=None, intra_op_num_threads: int = 0):
    """An ``onnxruntime.InferenceSession`` for an exported graph (plugin or onnx form).

    model: path or onnx.ModelProto. providers: default ["CPUExecutionProvider"] (the Python op
    runs on the CPU). sess_options: an ``onnxruntime.SessionOptions`` to extend (the extensions
    library is registered on it). intra_op_num_threads: 0 = ONNX Runtime's default.
    """
    import onnx
    import onnxruntime as ort

    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ONNX graph not found: {path}")
        proto = onnx.load(path)
    else:
        proto = model
    so = sess_options if sess_options is not None else ort.SessionOptions()
    if has_fp16(proto) and so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL:
        # ONNX Runtime 1.31's level-3 (layout) optimizers crash (SIGSEGV during session creation)
        # on our mixed fp16 decoder graph; the extended level is safe and as fast on CPU here.
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    if intra_op_num_threads:
        so.intra_op_num_threads = int(intra_op_num_threads)
    if count_plugin_nodes(proto):
        proto = prepare_for_ort(proto)
        so.register_custom_ops_library(register_ops())
    return ort.InferenceSession(proto.SerializeToString(), sess_options=so,
                                providers=list(providers) if providers else ["CPUExecutionProvider"])
