"""Backends behind one interface: ``create_backend(kind, model_dir, **opts)``.

Kinds: ``ort`` (ONNX Runtime), ``trt`` (TensorRT engines), ``torch``
(PyTorch model, imported only when selected), and ``fake`` (a numpy
stand-in that emits decoder outputs of synthetic moving objects; tests and
dry runs). Importing this package imports none of the heavy libraries.
"""
from __future__ import annotations

from ..errors import BackendUnavailableError
from .base import Backend

KINDS = ("ort", "trt", "torch", "fake")


def create_backend(kind: str, model_dir, **opts) -> Backend:
    """Create a backend of ``kind`` for the exported model in ``model_dir``.

    ``opts`` are passed to the backend: ``ort``: providers, threads;
    ``trt``: plugin_lib, engine_dir, build; ``torch``: weights, device;
    ``fake``: see runtime.backends.fake.FakeBackend (model_dir may be None).
    """
    if kind == "ort":
        from .ort_backend import OrtBackend
        return OrtBackend(model_dir, **opts)
    if kind == "trt":
        from .trt_backend import TrtBackend
        return TrtBackend(model_dir, **opts)
    if kind == "torch":
        from .torch_backend import TorchBackend
        return TorchBackend(model_dir, **opts)
    if kind == "fake":
        from .fake import FakeBackend
        return FakeBackend(model_dir, **opts)
    raise BackendUnavailableError(f"unknown backend {kind!r}; choose one of {', '.join(KINDS)}")


__all__ = ["Backend", "create_backend", "KINDS"]
