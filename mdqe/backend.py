"""The runtime's ``torch`` backend: runs ``model.encode_frames`` / ``model.decode_clip`` of this package.

For parity checks against the exported graphs and for GPUs without TensorRT. It lives in mdqe
(the runtime below is torch-free) and registers itself with the runtime's backend registry when
``register()`` is called: ``python -m mdqe.infer`` does that, then runs ``python -m runtime.infer``.
Weights: the ``weights`` option (a checkpoint path), else the path recorded in export.json
``weights.source``; random weights of an export are recreated from ``weights.seed`` and checked
against ``weights.sha256``.

GPU options (docs/gpu.md): ``msda`` ("auto" | "torch" = the grid_sample form |
"cuda" = our kernel, built beforehand with ``python -m mdqe.ops.msda.build
cuda``), ``amp`` (None | "fp16": autocast, fp32 accumulation inside
MSDeformAttn), ``cuda_graphs`` (encoder and decoder replayed from CUDA graphs,
one capture per input shape, eager fallback when capture fails; see
``mdqe.engine.cuda_graphs``), ``pinned`` (page-locked, asynchronous uploads).
"""
from __future__ import annotations

import contextlib
import os
from typing import Dict, Optional

import numpy as np
import torch

from runtime.backends import register_backend
from runtime.backends.base import Backend, valid_hw_or_full
from runtime.contract import DECODER_OUTPUTS, ENCODER_OUTPUTS, LEVEL_TENSORS, PER_FRAME_FEATURES, VALID_HW, ModelSpec
from runtime.errors import BackendUnavailableError, ModelDirError
from runtime.model_dir import load_model_dir

from . import build_model
from .checkpoint import load_checkpoint, state_dict_sha256
from .config import get_config
from .engine.cuda_graphs import GraphedCall
from .engine.device_io import HostToDevice, to_host

KIND = "torch"


class TorchBackend(Backend):
    kind = KIND

    def __init__(self, model_dir: str, weights: Optional[str] = None, device: str = "cpu",
                 allow_random: bool = False, spec: Optional[ModelSpec] = None, msda: str = "auto",
                 amp: Optional[str] = None, cuda_graphs: bool = False, pinned: bool = True,
                 graph_api=None, **_ignored):
        spec = spec or load_model_dir(model_dir)
        super().__init__(spec)
        self.torch = torch
        if not spec.config:
            raise ModelDirError(f"{spec.model_dir}/export.json has no 'config' section; the torch backend "
                                "needs it to build the model")
        cfg = get_config(dict(spec.config))
        source = weights or spec.weights.get("source")
        if source and source != "random":
            if not os.path.isfile(source):
                raise ModelDirError(f"weights file not found: {source} (pass --weights PATH)")
            model = build_model(cfg)
            try:
                state, _cfg, _extra = load_checkpoint(source)
            except Exception as e:  # refused (pickled code), corrupt, truncated, not a checkpoint
                msg = (str(e).splitlines() or [type(e).__name__])[0]
                raise ModelDirError(f"cannot use weights {source}: {msg}") from None
            missing, unexpected = model.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ModelDirError(f"weights {source} do not fit config {cfg.name!r}: "
                                    f"{len(missing)} missing, {len(unexpected)} unexpected keys "
                                    f"(e.g. {(list(missing) + list(unexpected))[:3]})")
            self.weights = source
        elif "seed" in spec.weights:
            # random weights are recreated from the export seed and checked against the recorded hash
            torch.manual_seed(int(spec.weights["seed"]))
            model = build_model(cfg)
            want = spec.weights.get("sha256")
            got = state_dict_sha256(model.state_dict())
            if want and got != want:
                raise ModelDirError("cannot recreate the random weights of this export (seed "
                                    f"{spec.weights['seed']}: state hash {got[:12]} != {want[:12]}); pass --weights")
            self.weights = f"random (seed {spec.weights['seed']}, sha256 verified)"
        elif allow_random:
            model = build_model(cfg)
            self.weights = "random (unseeded)"
        else:
            raise ModelDirError("this model was exported with random weights and no seed; the torch backend "
                                "cannot recreate them: pass --weights PATH")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError("backend 'torch' on cuda: torch sees no CUDA GPU")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self._setup_fast_path(msda, amp, cuda_graphs, pinned, graph_api)

    def _setup_fast_path(self, msda, amp, cuda_graphs, pinned, graph_api) -> None:
        """MSDA implementation, autocast, CUDA graphs and transfers (the torch helpers live in mdqe.engine)."""
        if msda not in ("auto", "torch", "cuda"):
            raise BackendUnavailableError(f"backend 'torch': msda must be auto, torch or cuda, got {msda!r}")
        if amp not in (None, "fp16"):
            raise BackendUnavailableError(f"backend 'torch': amp must be None or 'fp16', got {amp!r}")
        if msda == "cuda":
            from .ops.msda import native_cuda
            if self.device.type != "cuda":
                raise BackendUnavailableError("backend 'torch': msda='cuda' needs device cuda")
            if native_cuda.load_cuda_extension() is None:
                raise BackendUnavailableError(native_cuda.unavailable_reason())
        if amp and self.device.type != "cuda":
            raise BackendUnavailableError("backend 'torch': amp='fp16' needs device cuda")
        if cuda_graphs and self.device.type != "cuda" and graph_api is None:
            raise BackendUnavailableError("backend 'torch': cuda_graphs needs device cuda")
        self.msda, self.amp, self.pinned = msda, amp, bool(pinned)
        self.h2d = HostToDevice(self.device, pinned=pinned)
        self._shapes = None     # (spatial_shapes, level_start_index) on the host for the current decode
        self._enc_graph = GraphedCall(self._encode_fn, api=graph_api, name="encoder") if cuda_graphs else None
        self._dec_graph = GraphedCall(self._decode_fn, api=graph_api, name="decoder") if cuda_graphs else None

    def _context(self):
        """inference mode + the MSDA choice + autocast (no weight cache: it must not outlive a graph capture)."""
        from .ops import native_auto
        stack = contextlib.ExitStack()
        stack.enter_context(self.torch.inference_mode())
        stack.enter_context(native_auto(self.msda != "torch"))
        if self.amp == "fp16":
            stack.enter_context(self.torch.autocast("cuda", dtype=self.torch.float16, cache_enabled=False))
        return stack

    _ENC_KEYS = ENCODER_OUTPUTS + (VALID_HW,)
    _DEC_KEYS = DECODER_OUTPUTS

    def _encode_fn(self, images, valid_hw):
        with self._context():
            out = self.model.encode_frames(images, valid_hw)
            return {k: (out[k].float() if out[k].is_floating_point() else out[k]) for k in self._ENC_KEYS if k in out}

    def _decode_fn(self, memory, mask_features, query_feat, query_points, query_embed, valid_hw):
        spatial_shapes, level_start_index = self._shapes
        T = memory.shape[0]
        h0, w0 = (int(x) for x in spatial_shapes[0].tolist())
        with self._context():
            # decode_clip passes sem_logits through to init_sem_logits (a training output) only;
            # the exported decoder has no such input, so a zero map of the right shape stands in.
            feats = {"memory": memory, "mask_features": mask_features, "query_feat": query_feat,
                     "query_points": query_points, "query_embed": query_embed, VALID_HW: valid_hw,
                     "spatial_shapes": spatial_shapes, "level_start_index": level_start_index,
                     "sem_logits": self.torch.zeros((T, self.spec.num_classes, h0, w0), device=memory.device)}
            out = self.model.decode_clip(feats, with_aux=False)
            return {k: out[k].float() for k in self._DEC_KEYS}

    def _to_torch(self, a: np.ndarray, name: str = "x"):
        return self.h2d.upload(name, a)

    def _to_numpy(self, d) -> Dict[str, np.ndarray]:
        # graph outputs are static tensors overwritten by the next replay: never hand out views of them
        return to_host({k: v for k, v in d.items() if hasattr(v, "detach")}, copy=self._enc_graph is not None)

    def encode(self, images: np.ndarray, valid_hw: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
        x = self._to_torch(images.astype(np.float32, copy=False), "images")
        v = self._to_torch(valid_hw_or_full(images, valid_hw), VALID_HW)
        with self.torch.inference_mode():
            out = self._enc_graph(x, v) if self._enc_graph is not None else self._encode_fn(x, v)
        return self._to_numpy(out)

    def decode(self, feats: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        # spatial_shapes / level_start_index stay on the host: the model reads them there without a
        # device synchronisation, and the CUDA kernel gets a cached device copy (mdqe/ops/msda/native_cuda.py)
        self._shapes = tuple(self.torch.from_numpy(np.ascontiguousarray(feats[k]).astype(np.int64))
                             for k in LEVEL_TENSORS)
        args = [self._to_torch(feats[k], k) for k in PER_FRAME_FEATURES]
        with self.torch.inference_mode():
            if self._dec_graph is not None:
                key = tuple(int(v) for t in self._shapes for v in t.reshape(-1).tolist())
                out = self._dec_graph(*args, key=key)
            else:
                out = self._decode_fn(*args)
        return self._to_numpy(out)

    def graph_status(self) -> Dict[str, object]:
        """What the CUDA graphs did (captures, replays, eager fallbacks and why); {} without graphs."""
        return {g.name: g.status() for g in (self._enc_graph, self._dec_graph) if g is not None}

    def describe(self) -> Dict[str, str]:
        dev = str(self.device)
        if self.device.type == "cuda":
            dev = self.torch.cuda.get_device_name(self.device)
        return {"backend": "torch", "device": dev, "torch": self.torch.__version__, "weights": self.weights,
                "msda": self.msda, "amp": self.amp or "off", "cuda_graphs": self._enc_graph is not None,
                "pinned": self.h2d.pinned}


def register() -> None:
    """Register this backend as the runtime's ``torch`` kind (``create_backend("torch", ...)``)."""
    register_backend(KIND, TorchBackend)
