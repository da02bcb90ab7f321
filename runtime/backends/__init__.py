"""Backends behind one interface: ``create_backend(kind, model_dir, **opts)``.

Built in (torch-free): ``ort`` (ONNX Runtime), ``trt`` (TensorRT engines) and ``fake`` (a numpy
stand-in that emits decoder outputs of synthetic moving objects; tests and dry runs). Importing
this package imports none of the heavy libraries.

Other backends live above the runtime and register themselves explicitly with
``register_backend(name, factory)``: ``torch`` (the PyTorch model) is ``mdqe.backend``, registered
by ``mdqe.backend.register()``; ``python -m mdqe.infer`` is ``python -m runtime.infer`` with it
registered. Selecting ``torch`` while it is not registered raises BackendUnavailableError naming
``python -m mdqe.infer``.
"""
from __future__ import annotations

from typing import Callable, Dict

from ..errors import BackendUnavailableError
from .base import Backend

BUILTIN_KINDS = ("ort", "trt", "fake")
# the kinds the command lines offer: the built-in ones and the torch backend of mdqe (registered)
KINDS = ("ort", "trt", "torch", "fake")
# kinds provided by a layer above the runtime: kind -> how to get it registered
PROVIDED_ABOVE = {"torch": "python -m mdqe.infer (same options), or mdqe.backend.register() in Python"}

_REGISTRY: Dict[str, Callable[..., Backend]] = {}


def register_backend(name: str, factory: Callable[..., Backend]) -> None:
    """Make ``create_backend(name, model_dir, **opts)`` call ``factory(model_dir, **opts)``.

    Registering the same factory again is a no-op; a built-in kind or a different factory under
    a taken name raises ValueError."""
    if name in BUILTIN_KINDS:
        raise ValueError(f"backend {name!r} is built in and cannot be replaced")
    if _REGISTRY.get(name, factory) is not factory:
        raise ValueError(f"backend {name!r} is already registered ({_REGISTRY[name]!r})")
    _REGISTRY[name] = factory


def registered_backends() -> Dict[str, Callable[..., Backend]]:
    """{name: factory} of the backends registered from above the runtime."""
    return dict(_REGISTRY)


def require_backend(kind: str) -> None:
    """Raise BackendUnavailableError (one line, exit 2) unless ``kind`` is built in or registered:
    the command lines call it before any work."""
    if kind in BUILTIN_KINDS or kind in _REGISTRY:
        return
    if kind in PROVIDED_ABOVE:
        raise BackendUnavailableError(f"backend {kind!r} is not registered in this process (it runs the PyTorch "
                                      f"model of the mdqe package): use {PROVIDED_ABOVE[kind]}")
    choices = BUILTIN_KINDS + tuple(k for k in _REGISTRY if k not in BUILTIN_KINDS)
    raise BackendUnavailableError(f"unknown backend {kind!r}; choose one of {', '.join(choices)}")


def create_backend(kind: str, model_dir, **opts) -> Backend:
    """Create a backend of ``kind`` for the exported model in ``model_dir``.

    ``opts`` are passed to the backend: ``ort``: providers, threads;
    ``trt``: plugin_lib, engine_dir, build; ``torch``: weights, device (mdqe.backend.TorchBackend);
    ``fake``: see runtime.backends.fake.FakeBackend (model_dir may be None).
    """
    if kind == "ort":
        from .ort_backend import OrtBackend
        return OrtBackend(model_dir, **opts)
    if kind == "trt":
        from .trt_backend import TrtBackend
        return TrtBackend(model_dir, **opts)
    if kind == "fake":
        from .fake import FakeBackend
        return FakeBackend(model_dir, **opts)
    require_backend(kind)
    return _REGISTRY[kind](model_dir, **opts)


__all__ = ["Backend", "create_backend", "register_backend", "require_backend", "registered_backends", "KINDS", "BUILTIN_KINDS"]
