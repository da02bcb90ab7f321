"""Serving MDQE with NVIDIA Triton Inference Server (docs/serving.md).

- ``runtime.serving.server``: find and run the ``tritonserver`` binary bundled in the
  ``nvidia-pytriton`` wheel (or a system one) on loopback ports; start, wait until ready, stop.
- ``runtime.serving.python_models``: the Python-backend models of a generated repository
  (``mdqe_encoder`` / ``mdqe_decoder`` running ONNX Runtime, and the stateful ``mdqe_video``
  that drives the near-online pipeline frame by frame and calls the other two by BLS).
- ``runtime.serving.protocol``: tensor names and the per-frame result layout shared by the
  models, the repository writer (export/to_triton.py) and the client (runtime/client.py).

Nothing here imports tritonclient or triton_python_backend_utils at module import time.
"""
