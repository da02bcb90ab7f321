"""MDQE runtime: near-online video instance segmentation with exported graphs.

This package is what ships to an edge device: the floor of the import layers (it imports
nothing of mdqe/, export/, tools/ or benchmarks/, and never torch; tests/test_layering.py). The
exported-model contract lives in ``runtime.contract``. The ``torch`` backend lives in mdqe
(``mdqe.backend``) and registers itself with ``runtime.backends.register_backend``. Entry points:

- ``python -m runtime.infer --model DIR --video PATH --output DIR`` (``python -m mdqe.infer``:
  the same, plus ``--backend torch``)
- ``runtime.pipeline.run_video(...)`` for programmatic use
- ``runtime.backends.create_backend(kind, model_dir, **opts)``
"""
from .errors import (  # noqa: F401
    BackendUnavailableError,
    ModelDirError,
    PluginLibraryError,
    RuntimeErrorBase,
    VideoError,
)

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy: importing `runtime` stays cheap (no OpenCV / ONNX Runtime at import).
    if name == "run_video":
        from .pipeline import run_video
        return run_video
    if name == "create_backend":
        from .backends import create_backend
        return create_backend
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")


__all__ = [
    "run_video", "create_backend", "RuntimeErrorBase", "VideoError", "ModelDirError",
    "BackendUnavailableError", "PluginLibraryError", "__version__",
]
