"""Level sizes of the graph being traced, for the pure-ONNX forms ("onnx", "gridsample").

The export wrappers (export/wrappers.py) announce the feature-level sizes as values derived from
tensor shapes (0-d traced tensors of ``x.shape``), e.g. ``[(H//8, W//8), ...]``, around one traced
forward with `level_sizes_hint`. With a hint, the per-level Slice/Reshape sizes come from Shape ops
only (rank-0/1 shape tensors TensorRT resolves at build time) instead of from the *values* of
``spatial_shapes`` (a rank-2 tensor: TensorRT cannot use one as a shape tensor, and a decoder graph
input would become a shape input). Every call checks at trace time that the hint equals the
concrete ``spatial_shapes``. The hint describes the traced input; it selects no form.
"""
from __future__ import annotations

import contextlib
import threading
import warnings

_STATE = threading.local()


@contextlib.contextmanager
def level_sizes_hint(sizes):
    """Within the block, the pure-ONNX forms take their per-level (h, w) from `sizes` [L x (h, w)]."""
    previous = getattr(_STATE, "level_sizes", None)
    _STATE.level_sizes = list(sizes)
    try:
        yield
    finally:
        _STATE.level_sizes = previous


def _level_sizes_for_call(spatial_shapes):
    """The (h, w) per MSDA level for this call from the hint, or None without a hint. A call either
    attends the feature levels (rows == hint) or is a temporal cross-attention over T frames of one
    feature level (every row == hint[l])."""
    hint = getattr(_STATE, "level_sizes", None)
    if not hint:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarning: reading concrete values on purpose
        rows = [tuple(int(v) for v in r) for r in spatial_shapes.tolist()]
        concrete = [(int(h), int(w)) for h, w in hint]
    if rows == concrete:
        return list(hint)
    if rows and all(r == rows[0] for r in rows):
        levels = [i for i, c in enumerate(concrete) if c == rows[0]]
        if len(levels) == 1:
            return [hint[levels[0]]] * len(rows)
        if len(levels) > 1:
            raise RuntimeError(f"MSDeformAttn export: feature levels {levels} have the same size {rows[0]} at this "
                               "export resolution, so a per-level size cannot be told apart; export at a larger size")
    raise RuntimeError(f"MSDeformAttn export: spatial_shapes {rows} match neither the feature levels {concrete} "
                       "nor T copies of one of them")


def level_sizes(spatial_shapes, L: int):
    """[(h, w)] of the L levels of this call: the hint's traced sizes, else the values of
    spatial_shapes [L, 2] (traced tensors)."""
    sizes = _level_sizes_for_call(spatial_shapes)
    if sizes is None:
        sizes = [(spatial_shapes[lvl, 0], spatial_shapes[lvl, 1]) for lvl in range(L)]
    return sizes
