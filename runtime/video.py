"""Frame sources (OpenCV): a video file, a folder of frames, or a camera index.

Frames are yielded one at a time as BGR uint8 arrays [H, W, 3]; nothing is
buffered here, so memory does not depend on the video length.
"""
from __future__ import annotations

import os
from typing import Iterator, List, Optional, Union

import cv2
import numpy as np

from .errors import VideoError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class FrameSource:
    """Iterate the frames of ``source``.

    ``source``: path of a video file, path of a folder of images (sorted by
    name), or a camera index (int, or a string of digits that is not an
    existing path). ``max_frames`` stops early. Raises VideoError for a
    missing path, an unreadable/corrupt video, or a source without frames.
    Attributes: ``fps`` (30 when unknown), ``frame_count`` (estimate, None
    for cameras), ``name`` (for results), ``kind`` ("file"|"folder"|"camera").
    """

    def __init__(self, source: Union[str, int], max_frames: Optional[int] = None):
        self.source = source
        self.max_frames = max_frames if (max_frames is None or max_frames > 0) else None
        self._files: List[str] = []
        self._cap = None
        self._first: Optional[np.ndarray] = None
        if isinstance(source, int) or (isinstance(source, str) and source.isdigit() and not os.path.exists(source)):
            self.kind = "camera"
            self.name = f"camera{int(source)}"
            self._cap = cv2.VideoCapture(int(source))
            if not self._cap.isOpened():
                raise VideoError(f"cannot open camera {int(source)}")
        elif isinstance(source, str) and os.path.isdir(source):
            self.kind = "folder"
            self.name = os.path.basename(os.path.normpath(source))
            self._files = sorted(os.path.join(source, f) for f in os.listdir(source)
                                 if f.lower().endswith(IMAGE_EXTENSIONS))
            if not self._files:
                raise VideoError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in folder {source}")
        elif isinstance(source, str):
            if not os.path.exists(source):
                raise VideoError(f"video not found: {source}")
            if os.path.getsize(source) == 0:
                raise VideoError(f"video file is empty: {source}")
            self.kind = "file"
            self.name = os.path.splitext(os.path.basename(source))[0]
            self._cap = cv2.VideoCapture(source)
            if not self._cap.isOpened():
                raise VideoError(f"cannot open video {source}: not a video OpenCV can decode (corrupt or unsupported)")
        else:
            raise VideoError(f"unsupported video source {source!r}")
        # Decode the first frame now so a corrupt source fails before any model work.
        self._first = self._read_one(0)
        if self._first is None:
            raise VideoError(f"no frames could be decoded from {source} (corrupt or empty video)")
        self._size = tuple(self._first.shape[:2])

    @property
    def fps(self) -> float:
        if self._cap is not None:
            fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
            if 0.0 < fps < 1000.0:
                return fps
        return 30.0

    @property
    def frame_count(self) -> Optional[int]:
        if self.kind == "folder":
            n = len(self._files)
        elif self.kind == "file":
            n = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) or None
        else:
            n = None
        if n is not None and self.max_frames is not None:
            n = min(n, self.max_frames)
        return n if n is not None else self.max_frames

    @property
    def size(self):
        """(height, width) of the first frame."""
        return self._size

    def _read_one(self, index: int) -> Optional[np.ndarray]:
        if self.kind == "folder":
            if index >= len(self._files):
                return None
            img = cv2.imread(self._files[index], cv2.IMREAD_COLOR)
            if img is None:
                raise VideoError(f"cannot decode image {self._files[index]} (corrupt or unsupported)")
            return img
        ok, frame = self._cap.read()
        if not ok or frame is None:
            return None
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        return frame

    def __iter__(self) -> Iterator[np.ndarray]:
        index = 0
        while self.max_frames is None or index < self.max_frames:
            if index == 0 and self._first is not None:
                frame_out, self._first = self._first, None
            else:
                frame_out = self._read_one(index)
            if frame_out is None:
                break
            yield frame_out
            index += 1
        self.close()

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class FrameListSource(FrameSource):
    """Frames from an explicit list of image files, in list order: one video of a YouTube-VIS / OVIS
    dataset (its ``file_names`` joined to the frames folder). Same interface as FrameSource
    (kind "folder"); ``name`` defaults to the folder of the first file. Raises VideoError for an
    empty list, a missing file, or a first frame that cannot be decoded (later corrupt frames
    raise VideoError while iterating)."""

    def __init__(self, files: List[str], name: Optional[str] = None, max_frames: Optional[int] = None):
        files = [os.fspath(f) for f in files]
        if not files:
            raise VideoError(f"video {name or '?'} lists no frames")
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            raise VideoError(f"{len(missing)} of {len(files)} frames not found, first: {missing[0]}")
        self.source = name or os.path.dirname(files[0])
        self.name = name or os.path.basename(os.path.dirname(os.path.abspath(files[0])))
        self.kind = "folder"
        self.max_frames = max_frames if (max_frames is None or max_frames > 0) else None
        self._files = files
        self._cap = None
        self._first = self._read_one(0)
        if self._first is None:
            raise VideoError(f"no frames could be decoded from {self.source}")
        self._size = tuple(self._first.shape[:2])
