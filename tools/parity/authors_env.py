"""Import the authors' MDQE code (github.com/MinghanLi/MDQE_CVPR2023) from a user's checkout.

    from tools.parity.authors_env import load_authors
    A = load_authors("/path/to/MDQE_CVPR2023")      # the repository root (holds mdqe/ and configs/)
    A.models            # authors_mdqe.models  (Transformer_Enc, Transformer_Dec, SetCriterion, ...)
    A.mdqe              # authors_mdqe.mdqe    (MDQE meta-architecture)
    A.tracking          # authors_mdqe.tracking (Clips, OverTracker)
    A.criterion         # authors_mdqe.models.criterion
    cfg = A.make_cfg("R50_ytvis21.yaml")           # their config tree (add_mdqe_config + YAML chain)
    model = A.build_mdqe(cfg, backbone)             # their MDQE with a given D2-style backbone

Their package is also called `mdqe`; it is loaded as `authors_mdqe` (a package object whose
search path is their `mdqe/` folder, its own `__init__` not run, so the data/backbone modules
that need a real detectron2 stay unloaded) and never clashes with ours.

Stubbed, because they cannot be installed here, and only as far as these modules use them:
- `detectron2.*`: Instances, Boxes, BitMasks, ImageList (pad to a multiple, zeros), the
  META_ARCH registry, build_backbone (returns the backbone handed to `build_mdqe`),
  retry_if_cuda_oom (identity), CfgNode (attribute dict), ShapeSpec,
  get_uncertain_point_coords_on_grid (top-k cell centres, detectron2's documented rule).
- `MultiScaleDeformableAttention` (their compiled op): backed at run time by their own
  pure-torch `ms_deform_attn_core_pytorch` from `mdqe/models/ops/functions/ms_deform_attn_func.py`.
- `torchvision` only if it cannot be imported (its wheels need a matching torch build): the
  version string and `ops.misc.interpolate` (= F.interpolate), all their model code touches.
einops (pip, the `parity` extra of pyproject.toml) and scipy are real.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import types
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from runtime.errors import RuntimeErrorBase

PACKAGE = "authors_mdqe"
_REQUIRED = ("mdqe/models/transformer_dec.py", "mdqe/models/transformer_enc.py", "mdqe/mdqe.py",
             "mdqe/tracking/OverTracker.py", "mdqe/models/criterion.py", "configs/R50_ytvis21.yaml")


class AuthorsEnvError(RuntimeErrorBase, RuntimeError):
    """The given path is not a usable checkout of the authors' repository (exit 2)."""


# ----------------------------------------------------------------------------- stubs
class CfgNode(dict):
    """detectron2.config.CfgNode as an attribute dict (enough for add_mdqe_config and MDQE(cfg))."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as err:
            raise AttributeError(name) from err

    def __setattr__(self, name, value):
        self[name] = value


class Boxes:
    """detectron2.structures.Boxes: tensor [N, 4] (x0, y0, x1, y1)."""

    def __init__(self, tensor):
        tensor = torch.as_tensor(tensor, dtype=torch.float32)
        self.tensor = tensor.reshape(-1, 4) if tensor.numel() == 0 else tensor

    def __len__(self):
        return self.tensor.shape[0]

    def __getitem__(self, item):
        t = self.tensor[item]
        return Boxes(t.view(1, -1) if t.dim() == 1 else t)

    def to(self, device):
        return Boxes(self.tensor.to(device))

    def clone(self):
        return Boxes(self.tensor.clone())


class BitMasks:
    """detectron2.structures.BitMasks: tensor [N, H, W] bool; boxes of the True pixels."""

    def __init__(self, tensor):
        self.tensor = torch.as_tensor(tensor).to(torch.bool)
        self.image_size = tuple(self.tensor.shape[1:])

    def __len__(self):
        return self.tensor.shape[0]

    def __getitem__(self, item):
        t = self.tensor[item]
        return BitMasks(t.unsqueeze(0) if t.dim() == 2 else t)

    def to(self, device):
        return BitMasks(self.tensor.to(device))

    def get_bounding_boxes(self) -> Boxes:
        boxes = torch.zeros(self.tensor.shape[0], 4, dtype=torch.float32)
        x_any = self.tensor.any(dim=1)
        y_any = self.tensor.any(dim=2)
        for i in range(self.tensor.shape[0]):
            x = torch.where(x_any[i])[0]
            y = torch.where(y_any[i])[0]
            if len(x) > 0 and len(y) > 0:
                boxes[i] = torch.tensor([x[0], y[0], x[-1] + 1, y[-1] + 1], dtype=torch.float32)
        return Boxes(boxes)


class Instances:
    """detectron2.structures.Instances: named per-instance fields of equal length."""

    def __init__(self, image_size, **kwargs):
        object.__setattr__(self, "_image_size", tuple(image_size))
        object.__setattr__(self, "_fields", {})
        for k, v in kwargs.items():
            self.set(k, v)

    @property
    def image_size(self):
        return self._image_size

    def __setattr__(self, name, value):
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self.set(name, value)

    def __getattr__(self, name):
        if name == "_fields" or name not in self._fields:
            raise AttributeError(f"Cannot find field '{name}' in the given Instances!")
        return self._fields[name]

    def set(self, name, value):
        n = len(value)
        if self._fields:
            assert len(self) == n, f"Adding a field of length {n} to Instances of length {len(self)}"
        self._fields[name] = value

    def has(self, name):
        return name in self._fields

    def remove(self, name):
        del self._fields[name]

    def get(self, name):
        return self._fields[name]

    def get_fields(self):
        return self._fields

    def to(self, *args, **kwargs):
        ret = Instances(self._image_size)
        for k, v in self._fields.items():
            if hasattr(v, "to"):
                v = v.to(*args, **kwargs)
            ret.set(k, v)
        return ret

    def __getitem__(self, item):
        if type(item) is int:
            if item >= len(self) or item < -len(self):
                raise IndexError("Instances index out of range!")
            item = slice(item, None, len(self))
        ret = Instances(self._image_size)
        for k, v in self._fields.items():
            ret.set(k, v[item])
        return ret

    def __len__(self):
        for v in self._fields.values():
            return v.__len__()
        raise NotImplementedError("Empty Instances does not support __len__!")

    @staticmethod
    def cat(instance_lists):
        assert len(instance_lists) > 0
        if len(instance_lists) == 1:
            return instance_lists[0]
        ret = Instances(instance_lists[0].image_size)
        for k in instance_lists[0]._fields:
            values = [i.get(k) for i in instance_lists]
            v0 = values[0]
            if isinstance(v0, torch.Tensor):
                values = torch.cat(values, dim=0)
            elif isinstance(v0, list):
                values = [x for v in values for x in v]
            elif hasattr(type(v0), "cat"):
                values = type(v0).cat(values)
            else:
                raise ValueError(f"Unsupported type {type(v0)} for concatenation")
            ret.set(k, values)
        return ret


class ImageList:
    """detectron2.structures.ImageList: images padded (zeros, bottom/right) into one batch tensor."""

    def __init__(self, tensor, image_sizes):
        self.tensor = tensor
        self.image_sizes = image_sizes

    def __len__(self):
        return len(self.image_sizes)

    @staticmethod
    def from_tensors(tensors, size_divisibility: int = 0, pad_value: float = 0.0, padding_constraints=None):
        sizes = [tuple(int(s) for s in t.shape[-2:]) for t in tensors]
        h = max(s[0] for s in sizes)
        w = max(s[1] for s in sizes)
        if size_divisibility > 1:
            d = size_divisibility
            h, w = (h + d - 1) // d * d, (w + d - 1) // d * d
        out = tensors[0].new_full((len(tensors),) + tuple(tensors[0].shape[:-2]) + (h, w), pad_value)
        for i, t in enumerate(tensors):
            out[i, ..., :t.shape[-2], :t.shape[-1]] = t
        return ImageList(out.contiguous(), sizes)


class _Registry:
    def __init__(self, name):
        self.name, self._obj = name, {}

    def register(self, obj=None):
        def deco(o):
            self._obj[o.__name__] = o
            return o
        return deco(obj) if obj is not None else deco

    def get(self, name):
        return self._obj[name]


@dataclass
class ShapeSpec:
    channels: Optional[int] = None
    height: Optional[int] = None
    width: Optional[int] = None
    stride: Optional[int] = None


def get_uncertain_point_coords_on_grid(uncertainty_map, num_points):
    """The `num_points` most uncertain cells of [R, 1, H, W] -> (indices [R, P], centres (x, y) [R, P, 2])."""
    R, _, H, W = uncertainty_map.shape
    num_points = min(H * W, num_points)
    idx = torch.topk(uncertainty_map.view(R, H * W), k=num_points, dim=1)[1]
    coords = torch.zeros(R, num_points, 2, dtype=torch.float, device=uncertainty_map.device)
    coords[:, :, 0] = 0.5 / W + (idx % W).to(torch.float) / W
    coords[:, :, 1] = 0.5 / H + torch.div(idx, W, rounding_mode="floor").to(torch.float) / H
    return idx, coords


def point_sample(inp, point_coords, **kwargs):
    """grid_sample at normalised [0, 1] points (detectron2.projects.point_rend.point_features)."""
    add_dim = point_coords.dim() == 3
    if add_dim:
        point_coords = point_coords.unsqueeze(2)
    out = F.grid_sample(inp, 2.0 * point_coords - 1.0, **kwargs)
    return out.squeeze(3) if add_dim else out


_BACKBONE_FACTORY: list = [None]


def _build_backbone(cfg):
    if _BACKBONE_FACTORY[0] is None:
        raise AuthorsEnvError("no backbone: build the authors' MDQE through build_mdqe(cfg, backbone)")
    return _BACKBONE_FACTORY[0](cfg)


def _module(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    m.__path__ = []  # a package, so submodules can be registered below it
    return m


def _install_stubs():
    """Register stand-ins for what cannot be installed (only where a real one is absent)."""
    try:
        import detectron2  # noqa: F401  (a real detectron2 wins)
    except ImportError:
        meta_arch = _Registry("META_ARCH")
        backbone_reg = _Registry("BACKBONE")
        mods = {
            "detectron2": _module("detectron2"),
            "detectron2.config": _module("detectron2.config", CfgNode=CfgNode,
                                         configurable=lambda *a, **k: (a[0] if a and callable(a[0]) else (lambda f: f))),
            "detectron2.modeling": _module("detectron2.modeling", META_ARCH_REGISTRY=meta_arch,
                                           build_backbone=_build_backbone),
            "detectron2.modeling.backbone": _module("detectron2.modeling.backbone", Backbone=torch.nn.Module),
            "detectron2.modeling.backbone.build": _module("detectron2.modeling.backbone.build",
                                                          BACKBONE_REGISTRY=backbone_reg),
            "detectron2.structures": _module("detectron2.structures", Boxes=Boxes, BitMasks=BitMasks,
                                             Instances=Instances, ImageList=ImageList),
            "detectron2.layers": _module("detectron2.layers", ShapeSpec=ShapeSpec),
            "detectron2.utils": _module("detectron2.utils"),
            "detectron2.utils.memory": _module("detectron2.utils.memory", retry_if_cuda_oom=lambda f: f),
            "detectron2.utils.comm": _module("detectron2.utils.comm", get_world_size=lambda: 1,
                                             is_main_process=lambda: True, get_rank=lambda: 0),
            "detectron2.projects": _module("detectron2.projects"),
            "detectron2.projects.point_rend": _module("detectron2.projects.point_rend"),
            "detectron2.projects.point_rend.point_features": _module(
                "detectron2.projects.point_rend.point_features",
                get_uncertain_point_coords_on_grid=get_uncertain_point_coords_on_grid,
                point_sample=point_sample),
        }
        for name, mod in mods.items():
            sys.modules.setdefault(name, mod)
    try:
        import torchvision  # noqa: F401
    except Exception:  # absent, or a wheel built for another torch (fails at import)
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]
        misc = _module("torchvision.ops.misc", interpolate=F.interpolate)
        ops = _module("torchvision.ops", misc=misc)
        models_utils = _module("torchvision.models._utils", IntermediateLayerGetter=None)
        models = _module("torchvision.models", _utils=models_utils)
        tv = _module("torchvision", __version__="0.15.0", ops=ops, models=models, _is_tracing=lambda: False)
        for name, mod in (("torchvision", tv), ("torchvision.ops", ops), ("torchvision.ops.misc", misc),
                          ("torchvision.models", models), ("torchvision.models._utils", models_utils)):
            sys.modules[name] = mod
    if "MultiScaleDeformableAttention" not in sys.modules:
        def ms_deform_attn_forward(value, shapes, level_start_index, sampling_locations, attention_weights,
                                   im2col_step):
            fn = importlib.import_module(PACKAGE + ".models.ops.functions.ms_deform_attn_func")
            return fn.ms_deform_attn_core_pytorch(value, shapes, sampling_locations, attention_weights)

        def ms_deform_attn_backward(*args):
            raise NotImplementedError("the parity harness runs the authors' op forward only")

        sys.modules["MultiScaleDeformableAttention"] = _module(
            "MultiScaleDeformableAttention", ms_deform_attn_forward=ms_deform_attn_forward,
            ms_deform_attn_backward=ms_deform_attn_backward)


# ----------------------------------------------------------------------------- loading
class Authors:
    """Handles on the authors' modules loaded from one checkout."""

    def __init__(self, root: str):
        self.root = root
        self.package = sys.modules[PACKAGE]
        self.models = importlib.import_module(PACKAGE + ".models")
        self.transformer_enc = importlib.import_module(PACKAGE + ".models.transformer_enc")
        self.transformer_dec = importlib.import_module(PACKAGE + ".models.transformer_dec")
        self.position_encoding = importlib.import_module(PACKAGE + ".models.position_encoding")
        self.ms_deform_attn = importlib.import_module(PACKAGE + ".models.ops.modules.ms_deform_attn")
        self.criterion = importlib.import_module(PACKAGE + ".models.criterion")
        self.matcher = importlib.import_module(PACKAGE + ".models.matcher")
        self.tracking = importlib.import_module(PACKAGE + ".tracking")
        self.OverTracker = importlib.import_module(PACKAGE + ".tracking.OverTracker")
        self.mdqe = importlib.import_module(PACKAGE + ".mdqe")
        self.misc = importlib.import_module(PACKAGE + ".util.misc")
        self.config = importlib.import_module(PACKAGE + ".config")
        self.Instances = Instances
        self.ImageList = ImageList
        self.CfgNode = CfgNode

    def make_cfg(self, yaml_name: str = "R50_ytvis21.yaml", **overrides) -> CfgNode:
        """Their config: detectron2 defaults the MDQE code reads + add_mdqe_config + the YAML chain
        (`_BASE_` first). `overrides`: dotted keys, e.g. {"MODEL.MDQE.DROPOUT": 0.0}."""
        import yaml

        def node(d):
            return CfgNode({k: node(v) if isinstance(v, dict) else v for k, v in d.items()})

        cfg = node({
            "MODEL": {"DEVICE": "cpu", "MASK_ON": True, "PIXEL_MEAN": [123.675, 116.28, 103.53],
                      "PIXEL_STD": [58.395, 57.12, 57.375], "META_ARCHITECTURE": "MDQE", "WEIGHTS": "",
                      "RESNETS": {}},
            "INPUT": {}, "DATASETS": {"TRAIN": (), "TEST": ()}, "SOLVER": {},
            "TEST": {"DETECTIONS_PER_IMAGE": 100}, "DATALOADER": {},
        })
        self.config.add_mdqe_config(cfg)

        def merge(dst, src):
            for k, v in src.items():
                if isinstance(v, dict):
                    if not isinstance(dst.get(k), dict):
                        dst[k] = CfgNode()
                    merge(dst[k], v)
                else:
                    dst[k] = v

        def load(path):
            with open(path) as f:
                d = yaml.safe_load(f) or {}
            base = d.pop("_BASE_", None)
            if base:
                load(os.path.join(os.path.dirname(path), base))
            merge(cfg, d)

        path = yaml_name if os.path.isabs(yaml_name) else os.path.join(self.root, "configs", yaml_name)
        if not os.path.isfile(path):
            raise AuthorsEnvError(f"no config {path}")
        load(path)
        if isinstance(cfg.DATASETS.TEST, str):  # YAML "(a,)" tuples arrive as strings
            cfg.DATASETS.TEST = tuple(s.strip(" '\"") for s in cfg.DATASETS.TEST.strip("()").split(",") if s.strip())
        for key, v in overrides.items():
            *parents, leaf = key.split(".")
            n = cfg
            for p in parents:
                n = n[p]
            n[leaf] = v
        return cfg

    def build_mdqe(self, cfg: CfgNode, backbone_factory: Callable[[CfgNode], torch.nn.Module]):
        """Their MDQE meta-architecture; build_backbone(cfg) returns backbone_factory(cfg), a module
        with forward(images [N,3,H,W]) -> {name: [N,C,h,w]} and output_shape() -> {name: ShapeSpec}."""
        _BACKBONE_FACTORY[0] = backbone_factory
        try:
            return self.mdqe.MDQE(cfg)
        finally:
            _BACKBONE_FACTORY[0] = None


def d2_resnet_backbone(depth: int = 50, base_width: int = 64) -> torch.nn.Module:
    """A detectron2-style backbone for `build_mdqe`: our ResNet (its state-dict names are
    detectron2's: stem.conv1.norm.*, res2.0.conv1.*, ...), forward -> {res3, res4, res5}."""
    from mdqe.model.backbone import ResNet

    class D2ResNet(ResNet):
        def forward(self, x):
            return dict(zip(("res3", "res4", "res5"), super().forward(x)))

        def output_shape(self):
            return {k: ShapeSpec(channels=c, stride=s)
                    for k, c, s in zip(("res3", "res4", "res5"), self.out_channels, (8, 16, 32))}

    return D2ResNet(depth, base_width)


_LOADED: dict = {}


def load_authors(repo: str) -> Authors:
    """Load the authors' code from the repository root `repo` (once per process)."""
    root = os.path.abspath(os.path.expanduser(repo))
    missing = [p for p in _REQUIRED if not os.path.isfile(os.path.join(root, p))]
    if missing:
        raise AuthorsEnvError(f"{root} is not a checkout of MinghanLi/MDQE_CVPR2023 (missing {', '.join(missing)})")
    if root in _LOADED:
        return _LOADED[root]
    if PACKAGE in sys.modules:
        raise AuthorsEnvError(f"{PACKAGE} already loaded from {_LOADED and next(iter(_LOADED))}; one checkout per process")
    try:
        import einops  # noqa: F401
    except ImportError as err:
        raise AuthorsEnvError("the authors' code needs einops: pip install 'mdqe-deploy[parity]'") from err
    _install_stubs()
    spec = importlib.machinery.ModuleSpec(PACKAGE, None, is_package=True)
    spec.submodule_search_locations = [os.path.join(root, "mdqe")]
    pkg = importlib.util.module_from_spec(spec)
    pkg.__file__ = os.path.join(root, "mdqe", "__init__.py")
    sys.modules[PACKAGE] = pkg
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # their torch.cuda.amp decorators are deprecated upstream
        authors = Authors(root)
    _LOADED[root] = authors
    return authors
