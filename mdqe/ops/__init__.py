"""Custom ops of MDQE."""
from .ms_deform_attn import available_impls, ms_deform_attn, ms_deform_attn_torch, register_impl

__all__ = ["ms_deform_attn", "ms_deform_attn_torch", "register_impl", "available_impls"]
