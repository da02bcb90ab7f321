"""A numpy stand-in backend that emits decoder outputs of synthetic moving objects.

It needs no exported model: the encoder tags each frame with its index (the
n-th frame it encodes) and the decoder renders, for the T frames of a clip,
the masks, class logits and embeddings of a ``SyntheticScene`` -- objects
that move, cross each other, are occluded for a few frames and appear later.
Each clip shuffles which query holds which object (so a tracker cannot rely
on query order) and adds two near-duplicates (one with the same embedding,
one with a shifted mask) that per-clip filtering must remove. Besides the
four INTERFACES.md outputs it emits ``pred_queries`` [Q, hidden_dim], the
raw clip query the authors' tracker uses as its embedding.

Used by the runtime tests (tracker, pipeline, bounded memory) and for dry
runs: ``python -m runtime.infer --backend fake --video V --output O``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..contract import MSDA_ONNX, VALID_HW, ModelSpec, PreprocessSpec
from ..model_dir import load_model_dir
from .base import Backend, valid_hw_or_full

FAKE_CLASSES = ("disc", "square", "triangle", "ring", "cross")


@dataclass(frozen=True)
class SyntheticObject:
    """One object. Position in normalised image coordinates:
    ``x(t) = x0 + ax * sin(2*pi*t/period + phase)``, same for y with ``ay``.
    Visible for ``start <= t < end`` except in ``hidden`` intervals [a, b)
    and, if ``hide_every`` = (period, a, b), when ``a <= t % period < b``."""
    class_id: int
    x0: float
    y0: float
    ax: float = 0.0
    ay: float = 0.0
    period: float = 60.0
    phase: float = 0.0
    radius: float = 0.12                      # fraction of the shorter mask side
    start: int = 0
    end: Optional[int] = None
    hidden: Tuple[Tuple[int, int], ...] = ()
    hide_every: Optional[Tuple[int, int, int]] = None

    def center(self, t: int) -> Tuple[float, float]:
        a = 2.0 * math.pi * t / self.period + self.phase
        return self.x0 + self.ax * math.sin(a), self.y0 + self.ay * math.sin(a)

    def visible(self, t: int) -> bool:
        if t < self.start or (self.end is not None and t >= self.end):
            return False
        if any(a <= t < b for a, b in self.hidden):
            return False
        if self.hide_every is not None:
            p, a, b = self.hide_every
            if a <= t % p < b:
                return False
        return True


def default_objects() -> List[SyntheticObject]:
    """Two objects that cross every 30 frames, one hidden 6 of every 40 frames, one appearing at frame 10."""
    return [
        SyntheticObject(0, 0.5, 0.45, ax=0.3, period=60, phase=math.pi / 2),
        SyntheticObject(1, 0.5, 0.55, ax=-0.3, period=60, phase=math.pi / 2),
        SyntheticObject(2, 0.15, 0.5, ay=0.2, period=50, radius=0.1, hide_every=(40, 20, 26)),
        SyntheticObject(3, 0.85, 0.3, ay=0.1, period=30, radius=0.08, start=10),
    ]


@dataclass
class SyntheticScene:
    """Renders decoder outputs (INTERFACES.md section 5 names) for given frame indices."""
    objects: List[SyntheticObject] = field(default_factory=default_objects)
    num_classes: int = len(FAKE_CLASSES)
    embed_dim: int = 32
    num_queries: int = 64
    seed: int = 0
    embed_norm: float = 4.0
    add_duplicates: bool = True
    hidden_dim: int = 64

    def __post_init__(self):
        rng = np.random.default_rng(self.seed)
        e = rng.normal(size=(len(self.objects), self.embed_dim)).astype(np.float32)
        self.embeddings = self.embed_norm * e / np.linalg.norm(e, axis=1, keepdims=True)
        q = rng.normal(size=(len(self.objects), self.hidden_dim)).astype(np.float32)
        self.queries = self.embed_norm * q / np.linalg.norm(q, axis=1, keepdims=True)

    def object_mask_logits(self, obj: SyntheticObject, t: int, h: int, w: int, shift: int = 0) -> np.ndarray:
        """Mask logits [h, w] of ``obj`` at frame ``t`` (-8 everywhere when hidden)."""
        if not obj.visible(t):
            return np.full((h, w), -8.0, np.float32)
        cx, cy = obj.center(t)
        r = obj.radius * min(h, w)
        ys = (np.arange(h, dtype=np.float32) + 0.5) - cy * h
        xs = (np.arange(w, dtype=np.float32) + 0.5) - cx * w - shift
        d = np.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)
        return np.clip((r - d) * 2.0, -8.0, 8.0).astype(np.float32)

    def decoder_outputs(self, frames: Sequence[int], h: int, w: int) -> Dict[str, np.ndarray]:
        """Outputs for a clip of frames ``frames`` (len T) at mask size ``h`` x ``w``:
        pred_logits [Q,C], pred_boxes [Q,T,4], pred_masks [Q,T,h,w], pred_embeds [Q,E],
        pred_queries [Q,hidden_dim]."""
        T, Q, C, E = len(frames), self.num_queries, self.num_classes, self.embed_dim
        rng = np.random.default_rng(self.seed * 100003 + int(frames[0]))
        logits = (-6.0 + 0.5 * rng.standard_normal((Q, C))).astype(np.float32)   # background queries
        masks = np.full((Q, T, h, w), -8.0, np.float32)
        boxes = np.tile(np.array([0.5, 0.5, 0.1, 0.1], np.float32), (Q, T, 1))
        embeds = rng.normal(size=(Q, E)).astype(np.float32)
        queries = rng.normal(size=(Q, self.hidden_dim)).astype(np.float32)
        slots = iter(rng.permutation(Q))
        for k, obj in enumerate(self.objects):
            if not any(obj.visible(int(t)) for t in frames):
                continue
            q = next(slots, None)
            if q is None:
                break
            logits[q, obj.class_id % C] = 3.0 + 0.2 * rng.standard_normal()
            embeds[q] = self.embeddings[k] + 0.05 * rng.standard_normal(E)
            queries[q] = self.queries[k] + 0.05 * rng.standard_normal(self.hidden_dim)
            for i, t in enumerate(frames):
                masks[q, i] = self.object_mask_logits(obj, int(t), h, w)
                cx, cy = obj.center(int(t))
                boxes[q, i] = (cx, cy, 2 * obj.radius * min(h, w) / w, 2 * obj.radius * min(h, w) / h)
            if self.add_duplicates and k == 0:      # same embedding, lower score: dropped as a duplicate query
                d = next(slots, None)
                if d is not None:
                    logits[d], masks[d], boxes[d] = logits[q] - 1.0, masks[q], boxes[q]
                    embeds[d] = embeds[q] * 1.001
                    queries[d] = queries[q] * 1.001
            if self.add_duplicates and k == 1:      # shifted mask, other embedding: removed by mask NMS
                d = next(slots, None)
                if d is not None:
                    logits[d] = logits[q] - 1.5
                    boxes[d] = boxes[q]
                    for i, t in enumerate(frames):
                        masks[d, i] = self.object_mask_logits(obj, int(t), h, w, shift=1)
        # pred_queries (the raw clip query, the authors' tracking embedding): the fake has no hidden
        # dim, so it reuses the embedding (E wide), duplicates included
        return {"pred_logits": logits, "pred_boxes": np.clip(boxes, 0, 1), "pred_masks": masks,
                "pred_embeds": embeds, "pred_queries": queries.astype(np.float32)}


def fake_spec(num_frames: int = 4, num_queries: int = 64, embed_dim: int = 32,
              class_names: Sequence[str] = FAKE_CLASSES, shorter_side: int = 192, max_size: int = 384) -> ModelSpec:
    """A ModelSpec for the fake backend (no files behind it)."""
    return ModelSpec(
        model_dir="<fake>", num_frames=num_frames, num_queries=num_queries, num_classes=len(class_names),
        class_names=tuple(class_names), embed_dim=embed_dim, mask_stride=4,
        preprocess=PreprocessSpec(shorter_side=shorter_side, max_size=max_size, size_divisibility=32),
        msda=MSDA_ONNX, dtype="fp32", encoder_file="", decoder_file="", model_name="fake")


class FakeBackend(Backend):
    """Backend with the INTERFACES.md section 6 interface and no model behind it.

    ``model_dir``: an exported model directory whose export.json provides
    T, Q, E, classes and preprocessing (graphs are not loaded), or None for
    ``fake_spec()`` defaults. ``scene``: a SyntheticScene (default objects).
    """

    kind = "fake"

    def __init__(self, model_dir=None, spec: Optional[ModelSpec] = None,
                 scene: Optional[SyntheticScene] = None, **spec_overrides):
        if spec is None:
            spec = load_model_dir(model_dir) if model_dir else fake_spec(**spec_overrides)
        super().__init__(spec)
        self.scene = scene or SyntheticScene(num_classes=spec.num_classes, embed_dim=spec.embed_dim,
                                             num_queries=spec.num_queries)
        self.frames_encoded = 0

    def encode(self, images: np.ndarray, valid_hw: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
        """Tag each of the N frames with its running index (in ``memory[:, 0, 0]``)."""
        n, _, H, W = images.shape
        valid_hw = valid_hw_or_full(images, valid_hw)
        Q, E = self.spec.num_queries, self.spec.embed_dim
        memory = np.zeros((n, 1, 4), np.float32)
        memory[:, 0, 0] = np.arange(self.frames_encoded, self.frames_encoded + n)
        self.frames_encoded += n
        return {
            "memory": memory,
            "spatial_shapes": np.array([[max(1, H // 8), max(1, W // 8)]], np.int64),
            "level_start_index": np.zeros(1, np.int64),
            "mask_features": np.zeros((n, 1, H // 4, W // 4), np.float32),
            "query_feat": np.zeros((n, Q, 4), np.float32),
            "query_points": np.full((n, Q, 2), 0.5, np.float32),
            "query_embed": np.zeros((n, Q, E), np.float32),
            VALID_HW: valid_hw,
        }

    def decode(self, feats: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        frames = [int(round(float(i))) for i in feats["memory"][:, 0, 0]]
        if len(frames) != self.spec.num_frames:
            raise ValueError(f"decoder expects T={self.spec.num_frames} frames, got {len(frames)}")
        h, w = feats["mask_features"].shape[-2:]
        return self.scene.decoder_outputs(frames, h, w)

    def describe(self):
        return {"backend": "fake", "device": "cpu (numpy synthetic outputs, no model)"}
