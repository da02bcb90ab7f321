"""Custom ops of MDQE. MSDeformAttn lives in `mdqe.ops.msda` (its modules, implementations and export
forms); its entry points are re-exported here."""
from .msda import (MSDACaller, available_impls, ms_deform_attn, ms_deform_attn_torch, native_auto, register_impl,
                   use_msda_impl)

__all__ = ["ms_deform_attn", "ms_deform_attn_torch", "register_impl", "available_impls", "native_auto",
           "MSDACaller", "use_msda_impl"]
