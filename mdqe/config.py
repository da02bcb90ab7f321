"""Model configuration: one dataclass and named presets.

The r50 presets follow the authors' public implementation (see docs/model.md);
`tiny` is a small variant for CPU training and tests.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Tuple

PIXEL_MEAN = (123.675, 116.28, 103.53)  # RGB, 0..255
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class LossWeights:
    cls: float = 2.0
    box_l1: float = 2.0
    giou: float = 2.0
    mask_bce: float = 4.0
    mask_dice: float = 4.0
    init_sem: float = 2.0
    init_reid: float = 0.5
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    repulsion_iou: float = 0.1   # epsilon of Eq. 3
    repulsion_alpha: float = 2.0  # alpha of Eq. 4
    matcher_cls: float = 1.0
    matcher_box: float = 2.0
    matcher_dice: float = 4.0
    deep_supervision: bool = True


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build an MDQE model. Frozen: derive variants with `.replace(...)`."""

    name: str
    num_classes: int
    class_names: Tuple[str, ...]
    # backbone
    backbone_depth: int = 50            # 50 (bottleneck) or 18/34 (basic); see mdqe/model/backbone.py
    backbone_base_width: int = 64       # channels of the stem / first stage
    # transformer
    hidden_dim: int = 256
    num_heads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 1024
    num_feature_levels: int = 4
    enc_points: int = 4
    dec_points: int = 4
    offset_scale: float = 8.0           # sampling loc = ref + offset / offset_scale (authors' variant)
    dropout: float = 0.0
    # queries
    num_queries: int = 200              # rounded down to a square grid: int(sqrt(n))**2
    embed_dim: int = 64                 # query embedding ("track_embed") dim
    mask_dim: int = 32
    num_frames: int = 4                 # T, baked into the weights
    assoc_window_train: int = 7
    # Fidelity options (docs/model.md "Query initialization"); defaults = the authors' code.
    query_select: str = "authors"       # "authors" (upsampled equal cells, y quirk) | "floor_centres"
    assoc_window_rule: str = "authors"  # "authors": test window = window / 2 (float) | "floor": window // 2
    # input
    pixel_mean: Tuple[float, float, float] = PIXEL_MEAN
    pixel_std: Tuple[float, float, float] = PIXEL_STD
    size_divisibility: int = 32
    test_shorter_side: int = 360
    test_max_size: int = 640 * 2
    loss: LossWeights = field(default_factory=LossWeights)

    @property
    def grid_size(self) -> int:
        return int(math.isqrt(self.num_queries))

    @property
    def num_grid_queries(self) -> int:
        return self.grid_size ** 2

    @property
    def assoc_window_test(self) -> float:
        """Inference uses half the training window: window / 2 as a float (3.5 YouTube-VIS, 2.5 OVIS),
        as the authors' code; assoc_window_rule="floor" gives this project's earlier max(1, window // 2)."""
        if self.assoc_window_rule == "floor":
            return float(max(1, self.assoc_window_train // 2))
        return self.assoc_window_train / 2

    def __post_init__(self):
        if self.query_select not in ("authors", "floor_centres"):
            raise ValueError(f"query_select must be 'authors' or 'floor_centres', got {self.query_select!r}")
        if self.assoc_window_rule not in ("authors", "floor"):
            raise ValueError(f"assoc_window_rule must be 'authors' or 'floor', got {self.assoc_window_rule!r}")

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "ModelConfig":
        d = dict(d)
        d["class_names"] = tuple(d["class_names"])
        d["pixel_mean"] = tuple(d["pixel_mean"])
        d["pixel_std"] = tuple(d["pixel_std"])
        if isinstance(d.get("loss"), dict):
            d["loss"] = LossWeights(**d["loss"])
        known = {f.name for f in dataclasses.fields(ModelConfig)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {unknown}")
        return ModelConfig(**d)


YTVIS21_CLASSES = (
    "airplane", "bear", "bird", "boat", "car", "cat", "cow", "deer", "dog", "duck",
    "earless_seal", "elephant", "fish", "flying_disc", "fox", "frog", "giant_panda",
    "giraffe", "horse", "leopard", "lizard", "monkey", "motorbike", "mouse", "parrot",
    "person", "rabbit", "shark", "skateboard", "snake", "snowboard", "squirrel",
    "surfboard", "tennis_racket", "tiger", "train", "truck", "turtle", "whale", "zebra",
)
OVIS_CLASSES = (
    "Person", "Bird", "Cat", "Dog", "Horse", "Sheep", "Cow", "Elephant", "Bear", "Zebra",
    "Giraffe", "Poultry", "Giant_panda", "Lizard", "Parrot", "Monkey", "Rabbit", "Tiger",
    "Fish", "Turtle", "Bicycle", "Motorcycle", "Airplane", "Boat", "Vehical",
)
# Classes of the project's synthetic occluded-video dataset (mdqe/data/synthetic.py).
SYNTHETIC_CLASSES = ("disc", "square", "triangle", "ring", "cross")

PRESETS = {
    "r50_ytvis21": ModelConfig(
        name="r50_ytvis21", num_classes=40, class_names=YTVIS21_CLASSES, assoc_window_train=7,
        test_shorter_side=360,
    ),
    "r50_ovis": ModelConfig(
        name="r50_ovis", num_classes=25, class_names=OVIS_CLASSES, assoc_window_train=5,
        test_shorter_side=360,
    ),
    "tiny": ModelConfig(
        name="tiny", num_classes=len(SYNTHETIC_CLASSES), class_names=SYNTHETIC_CLASSES,
        backbone_depth=18, backbone_base_width=16, hidden_dim=64, num_heads=4, enc_layers=2,
        dec_layers=2, dim_feedforward=128, enc_points=4, dec_points=4, num_queries=64,
        embed_dim=32, mask_dim=16, num_frames=4, assoc_window_train=5, test_shorter_side=192,
        test_max_size=384,
    ),
}


def get_config(name_or_config) -> ModelConfig:
    """Return a preset by name, or pass a ModelConfig / dict through."""
    if isinstance(name_or_config, ModelConfig):
        return name_or_config
    if isinstance(name_or_config, dict):
        return ModelConfig.from_dict(name_or_config)
    if name_or_config not in PRESETS:
        raise KeyError(f"unknown config {name_or_config!r}; presets: {sorted(PRESETS)}")
    return PRESETS[name_or_config]
