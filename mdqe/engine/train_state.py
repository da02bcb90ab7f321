"""Training checkpoints: model weights (safetensors, shippable) + resumable state.

* ``model_<iter>.safetensors`` / ``model_final.safetensors``: weights with the
  config in the metadata, written by :func:`mdqe.checkpoint.save_checkpoint`
  (readable by ``mdqe.checkpoint.load_checkpoint``).
* ``state_<iter>.pt``: ``{"model", "optimizer", "scheduler", "iteration",
  "config", "rng"}`` - tensors, numbers, strings and containers only, so
  ``torch.load(weights_only=True)`` reads it back.
Both are written to a temporary file and renamed into place.
"""
from __future__ import annotations

import os
import random
from typing import Optional

import numpy as np
import torch

from runtime.atomic import write_with

from ..checkpoint import save_checkpoint


def atomic_torch_save(obj, path: str) -> None:
    """``torch.save`` to a temporary file, renamed into place (runtime.atomic)."""
    write_with(path, lambda tmp: torch.save(obj, tmp), suffix=".pt")


def save_model_weights(model: torch.nn.Module, path: str, cfg, extra: Optional[dict] = None) -> None:
    """Weights as safetensors with the config in the metadata (atomic: mdqe.checkpoint.save_checkpoint)."""
    save_checkpoint(model, path, cfg, extra=extra)


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state()[1].astype(np.int64).tolist(),
            "numpy_pos": int(np.random.get_state()[2]), "python": repr(random.getstate())}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", np.asarray(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
    import ast
    random.setstate(ast.literal_eval(state["python"]))


def save_train_state(path: str, model, optimizer, scheduler, iteration: int, cfg) -> None:
    atomic_torch_save({
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "iteration": int(iteration),
        "config": cfg.to_dict(),
        "rng": rng_state(),
    }, path)


def load_train_state(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--resume: no such file {path}")
    from ..checkpoint import CheckpointError, safe_torch_load
    try:
        # weights-only; pickled code is refused with our message (never torch's advice to disable it)
        state = safe_torch_load(path)
    except CheckpointError as e:
        raise ValueError(f"cannot read training state: {e}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a training state (a {type(state).__name__}, not a dict); "
                         "pass a state_<iter>.pt written by mdqe.train")
    missing = {"model", "optimizer", "scheduler", "iteration", "config"} - set(state)
    if missing:
        raise ValueError(f"{path} is not a training state (missing {sorted(missing)}); "
                         "pass a state_<iter>.pt written by mdqe.train")
    return state
