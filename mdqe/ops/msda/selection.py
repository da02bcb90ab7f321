"""Choosing the implementation a model's MSDeformAttn calls use, explicitly and per module.

A module whose forward calls the op inherits `MSDACaller` and passes ``impl=self.msda_impl``
(default "auto"). `use_msda_impl(model, impl)` sets that attribute on every such submodule of
`model` for the duration of a block and restores the previous values after it: the exporter uses it
to select an export form (``with use_msda_impl(model, "plugin"): torch.onnx.export(model, ...)``).
Nothing is global or thread-local: two models (or two threads with different models) never see
each other's choice, and a call that passes its own ``impl=`` is never overridden.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Union

from .dispatch import available_impls
from .forms import FORMS, form_impl


class MSDACaller:
    """Mixin of nn.Modules that call `mdqe.ops.ms_deform_attn(..., impl=self.msda_impl)`."""

    msda_impl: Union[str, Callable] = "auto"


def resolve_choice(impl: Union[str, Callable], plugin_version: str | None = None) -> Union[str, Callable]:
    """What `use_msda_impl` stores: "auto", a registered implementation name, an export form (with
    its options: `plugin_version` for "trt-builtin") or an implementation function. ValueError
    naming the choices otherwise."""
    if impl in FORMS:
        fn = form_impl(impl, plugin_version)                 # validates plugin_version
        return impl if plugin_version is None else fn
    if plugin_version is not None:
        raise ValueError("plugin_version is an option of the trt-builtin form only")
    if callable(impl) or impl == "auto" or impl in available_impls():
        return impl
    raise ValueError(f"MSDeformAttn impl must be 'auto', one of {available_impls()} or a function, got {impl!r} "
                     f"(export forms: {tuple(FORMS)})")


@contextlib.contextmanager
def use_msda_impl(model, impl: Union[str, Callable], plugin_version: str | None = None):
    """Within the block, every `MSDACaller` submodule of `model` (an nn.Module) calls MSDeformAttn
    with `impl` (see `resolve_choice`); the previous choices come back afterwards."""
    choice = resolve_choice(impl, plugin_version)
    callers = [m for m in model.modules() if isinstance(m, MSDACaller)]
    previous = [m.__dict__.get("msda_impl") for m in callers]
    for m in callers:
        m.msda_impl = choice
    try:
        yield model
    finally:
        for m, old in zip(callers, previous):
            if old is None:
                m.__dict__.pop("msda_impl", None)
            else:
                m.msda_impl = old
