"""Data: synthetic occluded-video generator, YouTube-VIS / OVIS / COCO datasets, clip transforms.

The generator (``mdqe.data.synthetic``) and the JSON indexing
(``mdqe.data.vis_index``) are torch-free; the torch Datasets live in
``mdqe.data.datasets`` and are imported lazily.
"""
_LAZY = {
    "VISClipDataset": "datasets", "COCOPseudoVideoDataset": "datasets", "build_clip_dataset": "datasets",
    "load_coco_images": "datasets", "collate_clips": "collate", "make_sample": "collate",
    "ClipAugmentation": "transforms", "default_augmentation": "transforms", "normalize_and_pad": "transforms",
    "generate_split": "synthetic", "make_splits": "synthetic",
    "VISIndex": "vis_index", "load_vis_index": "vis_index",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
