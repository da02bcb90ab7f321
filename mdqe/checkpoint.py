"""Safe checkpoints: our safetensors files (config JSON in the metadata) and `.pth` files read with
`torch.load(weights_only=True)`. Anything that needs pickled code is refused.

    save_checkpoint(model_or_state, path, cfg, extra=None)
    load_checkpoint(path, cfg=None) -> (state_dict, cfg, extra)
    safe_torch_load(path, allow_numpy=False) -> object   (used by mdqe.convert)
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import pickle
import re
import warnings
from typing import Dict, Optional, Tuple

import torch

from runtime.errors import RuntimeErrorBase

from .config import ModelConfig, get_config

FORMAT = "mdqe-checkpoint-1"

# numpy functions/classes needed to rebuild plain numpy arrays and scalars from a pickle.
# They construct data only; object arrays would need further globals, which stay refused.
_NUMPY_SAFE = (
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.ndarray", "numpy.dtype",
)


class CheckpointError(RuntimeErrorBase, RuntimeError):
    """A checkpoint that cannot be read safely or does not fit the model (bad input: exit 2)."""


def _state_of(model_or_state) -> Dict[str, torch.Tensor]:
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    out = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"state entry {k!r} is a {type(v).__name__}, not a tensor")
        out[k] = v.detach().to("cpu").contiguous().clone()   # clone: safetensors refuses shared storage
    return out


def save_checkpoint(model_or_state, path: str, cfg, extra: Optional[dict] = None) -> str:
    """Write the tensors as safetensors with metadata {format, config (JSON), extra (JSON)}.
    The file appears atomically (temporary file in the same folder, then rename). Returns path."""
    from safetensors.torch import save_file
    cfg = get_config(cfg)
    meta = {"format": FORMAT, "config": json.dumps(cfg.to_dict()), "extra": json.dumps(extra or {})}
    state = _state_of(model_or_state)
    from runtime.atomic import atomic_path
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(state, tmp, metadata=meta)
    return path


def _is_safetensors(path: str) -> bool:
    """safetensors: 8-byte little-endian header length, then a JSON header starting with '{'."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < n < os.path.getsize(path)


def _resolve(name: str):
    mod, _, attr = name.rpartition(".")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # numpy 2 warns when numpy.core is imported
        return getattr(importlib.import_module(mod), attr)


def _numpy_global_ok(name: str) -> bool:
    return name in _NUMPY_SAFE or re.fullmatch(r"numpy\.dtypes\.[A-Za-z0-9]+DType", name) is not None


def _unsupported_global(err: Exception) -> Optional[str]:
    m = re.search(r"GLOBAL ([A-Za-z_][\w.]*)", str(err)) or re.search(r"got <class '([A-Za-z_][\w.]*)'>", str(err))
    return m.group(1) if m else None


@contextlib.contextmanager
def _allowing(objs: list):
    """Allow `objs` for weights-only unpickling inside the block (torch >= 2.5: scoped; torch 2.4:
    added globally, which only ever concerns the numpy reconstructors of _NUMPY_SAFE)."""
    if hasattr(torch.serialization, "safe_globals"):
        with torch.serialization.safe_globals(objs):
            yield
    else:
        if objs:
            torch.serialization.add_safe_globals(objs)
        yield


def _all_unsafe_globals(path: str) -> list:
    if not hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):   # torch < 2.5
        return []
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:
        return []


def _reason(err: Exception) -> str:
    """The informative part of a torch.load error: its lines without torch's advice to load with
    weights_only=False (which would run pickled code; never what a user of this project should do)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    keep = [ln for ln in lines if "weights_only" not in ln and "file an issue" not in ln.lower()
            and "documentation of torch.load" not in ln and not ln.endswith("error:")]
    return "; ".join(keep)[:200] or type(err).__name__


def safe_torch_load(path: str, allow_numpy: bool = False):
    """torch.load(weights_only=True). With allow_numpy, the numpy reconstruct functions and dtype
    classes (and nothing else) are allowed too. Raises CheckpointError naming the refused globals."""
    allowed = []
    listed = _all_unsafe_globals(path)          # complete list for zip-format files
    if listed:
        refused = [g for g in listed if not (allow_numpy and _numpy_global_ok(g))]
        if refused:
            raise CheckpointError(
                f"refusing to load {path}: it needs pickled code or objects that a weights-only load does "
                f"not allow ({', '.join(refused)}). Only tensors (and, for the authors' checkpoints, numpy "
                f"arrays) are accepted; re-save the weights as a plain state dict or safetensors.")
        try:
            allowed = [_resolve(g) for g in listed]
        except (ImportError, AttributeError) as exc:
            raise CheckpointError(f"{path}: cannot resolve numpy globals {listed}: {exc}") from exc
    for _ in range(32):
        try:
            with _allowing(allowed):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            name = _unsupported_global(err)
            if name is None and not _all_unsafe_globals(path):
                raise CheckpointError(f"{path}: not a readable torch checkpoint (corrupt, truncated or another "
                                      f"format: {_reason(err)})") from None
            if name is None or not (allow_numpy and _numpy_global_ok(name)):
                others = [g for g in _all_unsafe_globals(path) if not (allow_numpy and _numpy_global_ok(g))]
                refused = sorted(set(([name] if name else []) + others))
                raise CheckpointError(
                    f"refusing to load {path}: it needs pickled code or objects that a weights-only load "
                    f"does not allow ({', '.join(refused) or _reason(err)}). Only tensors (and, for the authors' "
                    f"checkpoints, numpy arrays) are accepted; re-save the weights as a plain state dict "
                    f"or safetensors.") from err
            try:
                allowed.append(_resolve(name))
            except (ImportError, AttributeError) as exc:
                raise CheckpointError(f"{path}: cannot resolve numpy global {name}: {exc}") from err
        except (RuntimeError, EOFError, ValueError, OSError, IndexError, KeyError, TypeError, AttributeError,
                MemoryError, OverflowError, UnicodeDecodeError) as err:
            # torch's weights-only unpickler fails on corrupt bytes with any of these (measured on
            # seeded random files: UnpicklingError, IndexError, KeyError, ...)
            raise CheckpointError(f"{path}: not a readable torch checkpoint (corrupt, truncated or another "
                                  f"format: {type(err).__name__}: {_reason(err)})") from None
    raise CheckpointError(f"{path}: too many distinct numpy globals")


def _state_from_pickle(obj, path: str) -> Tuple[Dict[str, torch.Tensor], Optional[dict], dict]:
    """Accept a plain state dict, or {"model"|"state_dict": state, "config"?: dict, "extra"?: dict}."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    cfg_dict, extra = None, {}
    if "model" in obj or "state_dict" in obj:
        state = obj.get("model", obj.get("state_dict"))
        cfg_dict = obj.get("config")
        extra = obj.get("extra") or {}
    else:
        state = obj
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries that are not tensors: {bad[:10]}")
    return dict(state), cfg_dict, extra


def load_checkpoint(path: str, cfg=None) -> Tuple[Dict[str, torch.Tensor], ModelConfig, dict]:
    """Read our safetensors file or a weights-only `.pth`. `cfg` (name, ModelConfig or dict) is used
    when given, else the config stored in the file; a file without one needs `cfg`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(path)
    if _is_safetensors(path):
        from safetensors import safe_open
        from safetensors.torch import load_file
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(path, device="cpu")
        cfg_dict = json.loads(meta["config"]) if "config" in meta else None
        extra = json.loads(meta.get("extra", "{}"))
    else:
        state, cfg_dict, extra = _state_from_pickle(safe_torch_load(path), path)
    if cfg is not None:
        cfg = get_config(cfg)
    elif cfg_dict is not None:
        cfg = ModelConfig.from_dict(cfg_dict)
    else:
        raise CheckpointError(f"{path} stores no config; pass cfg= (a preset name or ModelConfig)")
    return state, cfg, extra


def load_model(path: str, cfg=None, strict: bool = True):
    """Build the model of the checkpoint's config and load its weights. Returns (model in eval mode, extra)."""
    from . import build_model
    state, cfg, extra = load_checkpoint(path, cfg)
    model = build_model(cfg)
    result = model.load_state_dict(state, strict=strict)
    if not strict and (result.missing_keys or result.unexpected_keys):
        warnings.warn(f"{path}: missing {result.missing_keys}, unexpected {result.unexpected_keys}")
    return model.eval(), extra


def state_dict_sha256(state) -> str:
    """Hash of a state dict as export.json records it (identifies random weights too): tensors by
    sorted name, each hashed with its name, dtype string, shape tuple string and raw bytes."""
    import hashlib

    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
