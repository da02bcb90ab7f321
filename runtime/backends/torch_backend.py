"""PyTorch backend: runs ``model.encode_frames`` / ``model.decode_clip`` of the mdqe package.

For parity checks against the exported graphs and for GPUs without
TensorRT. torch and mdqe are imported only when this backend is created.
Weights: the ``weights`` option (a checkpoint path), else the path recorded
in export.json ``weights.source``; random weights of an export are recreated
from ``weights.seed`` and checked against ``weights.sha256``.
"""
from __future__ import annotations

import os
from typing import Dict, Optional

import numpy as np

from ..errors import BackendUnavailableError, ModelDirError
from ..model_dir import DECODER_OUTPUTS, ModelSpec, load_model_dir
from .base import Backend, valid_hw_or_full


def state_dict_sha256(state) -> str:
    """Hash of a state dict as export.json records it (mdqe.checkpoint.state_dict_sha256)."""
    from mdqe.checkpoint import state_dict_sha256 as _sha
    return _sha(state)


class TorchBackend(Backend):
    kind = "torch"

    def __init__(self, model_dir: str, weights: Optional[str] = None, device: str = "cpu",
                 allow_random: bool = False, spec: Optional[ModelSpec] = None, **_ignored):
        spec = spec or load_model_dir(model_dir)
        super().__init__(spec)
        try:
            import torch
            import mdqe
        except ImportError as e:
            raise BackendUnavailableError(f"backend 'torch' needs torch and the mdqe package ({e}); "
                                          "install with `pip install .[torch]`") from e
        self.torch = torch
        if not spec.config:
            raise ModelDirError(f"{spec.model_dir}/export.json has no 'config' section; the torch backend "
                                "needs it to build the model")
        cfg = mdqe.get_config(dict(spec.config))
        source = weights or spec.weights.get("source")
        if source and source != "random":
            if not os.path.isfile(source):
                raise ModelDirError(f"weights file not found: {source} (pass --weights PATH)")
            model = mdqe.build_model(cfg)
            try:
                state = self._load_state(source)
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
            model = mdqe.build_model(cfg)
            want = spec.weights.get("sha256")
            got = state_dict_sha256(model.state_dict())
            if want and got != want:
                raise ModelDirError("cannot recreate the random weights of this export (seed "
                                    f"{spec.weights['seed']}: state hash {got[:12]} != {want[:12]}); pass --weights")
            self.weights = f"random (seed {spec.weights['seed']}, sha256 verified)"
        elif allow_random:
            model = mdqe.build_model(cfg)
            self.weights = "random (unseeded)"
        else:
            raise ModelDirError("this model was exported with random weights and no seed; the torch backend "
                                "cannot recreate them: pass --weights PATH")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError("backend 'torch' on cuda: torch sees no CUDA GPU")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    @staticmethod
    def _load_state(path: str):
        try:
            from mdqe.checkpoint import load_checkpoint
        except ImportError:
            load_checkpoint = None
        if load_checkpoint is not None:
            state, _cfg, _extra = load_checkpoint(path)
            return state
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file
            return load_file(path)
        import torch
        obj = torch.load(path, map_location="cpu", weights_only=True)
        return obj.get("model", obj) if isinstance(obj, dict) else obj

    def _to_torch(self, a: np.ndarray):
        return self.torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    @staticmethod
    def _to_numpy(d) -> Dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in d.items() if hasattr(v, "detach")}

    def encode(self, images: np.ndarray, valid_hw: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
        valid_hw = valid_hw_or_full(images, valid_hw)
        with self.torch.inference_mode():
            out = self.model.encode_frames(self._to_torch(images.astype(np.float32)), self._to_torch(valid_hw))
        return self._to_numpy(out)

    def decode(self, feats: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        tf = {k: self._to_torch(v) for k, v in feats.items()}
        if "sem_logits" not in tf:
            # decode_clip passes sem_logits through to init_sem_logits (a training output) only;
            # the exported decoder has no such input, so a zero map of the right shape stands in.
            T = tf["memory"].shape[0]
            h0, w0 = (int(x) for x in feats["spatial_shapes"][0])
            tf["sem_logits"] = self.torch.zeros((T, self.spec.num_classes, h0, w0), device=self.device)
        with self.torch.inference_mode():
            out = self.model.decode_clip(tf, with_aux=False)
        keep = DECODER_OUTPUTS
        return {k: v.astype(np.float32) for k, v in self._to_numpy({k: out[k] for k in keep}).items()}

    def describe(self) -> Dict[str, str]:
        dev = str(self.device)
        if self.device.type == "cuda":
            dev = self.torch.cuda.get_device_name(self.device)
        return {"backend": "torch", "device": dev, "torch": self.torch.__version__, "weights": self.weights}
