"""Native (C/C++) helpers of the runtime, loaded with ctypes; no torch."""
from .msda import is_available, library_path, ms_deform_attn_cpu

__all__ = ["ms_deform_attn_cpu", "is_available", "library_path"]
