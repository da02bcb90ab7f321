"""impl="cpu": the C++ CPU kernel (libmdqe_msda.so, built by `pip install`) through the torch-free
ctypes binding `runtime.native.msda`. Inference only; float32 math, returns value.dtype.
`impl="auto"` picks it for CPU float32 tensors when no gradient is needed and the library loads.
"""
from __future__ import annotations

import torch

from ...tracing import exporting
from .checks import check_inference, needs_grad


def _binding():
    try:
        from runtime.native import msda
    except ImportError as exc:  # the runtime package is not importable (not installed)
        raise RuntimeError(f"MSDeformAttn impl='cpu' needs the package runtime.native ({exc})") from exc
    return msda


def ms_deform_attn_cpu(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """The C++ CPU kernel: CPU tensors (shapes as in `mdqe.ops.msda`) -> [N, Lq, M*D] of value.dtype."""
    check_inference("cpu", value, sampling_locations, attention_weights)
    for name, t in (("value", value), ("sampling_locations", sampling_locations),
                    ("attention_weights", attention_weights)):
        if t.device.type != "cpu":
            raise ValueError(f"MSDeformAttn impl='cpu' needs CPU tensors, but {name} is on {t.device}")
    msda = _binding()
    if not msda.is_available():
        msda.library_path()  # raises RuntimeError naming the paths tried
    out = msda.ms_deform_attn_cpu(
        value.detach().to(torch.float32).contiguous().numpy(),
        spatial_shapes.detach().cpu().to(torch.int64).contiguous().numpy(),
        level_start_index.detach().cpu().to(torch.int64).contiguous().numpy(),
        sampling_locations.detach().to(torch.float32).contiguous().numpy(),
        attention_weights.detach().to(torch.float32).contiguous().numpy(),
        num_threads=torch.get_num_threads())
    return torch.from_numpy(out).to(value.dtype)


def available() -> bool:
    """True when the CPU library loads."""
    try:
        return _binding().is_available()
    except RuntimeError:
        return False


def auto_serves(value, sampling_locations, attention_weights) -> bool:
    """impl="auto" chooser: CPU float32 inference, not while exporting, library present."""
    return (value.device.type == "cpu" and value.dtype == torch.float32 and not exporting()
            and not needs_grad(value, sampling_locations, attention_weights) and available())
