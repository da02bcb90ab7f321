"""Overlay video: masks blended over the frames, one colour per track, labels "id class score".

Frames are written as soon as they are final; the file is written under a
temporary name and renamed on ``close()`` (atomic).
"""
from __future__ import annotations

import colorsys
import contextlib
import os
import tempfile
from typing import Sequence, Tuple

import cv2
import numpy as np

from ..atomic import _public
from ..errors import RuntimeErrorBase


def track_color(track_id: int) -> Tuple[int, int, int]:
    """A stable, well-spread BGR colour for a track id (golden-ratio hue steps)."""
    h = (track_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_overlay(frame_bgr: np.ndarray, instances: Sequence[Tuple[int, np.ndarray, str]], alpha: float = 0.5) -> np.ndarray:
    """Return a copy of ``frame_bgr`` [H,W,3] with ``instances`` [(track id, mask uint8 [H,W], label)] drawn."""
    out = frame_bgr.copy()
    for tid, mask, label in instances:
        mask = np.ascontiguousarray(mask, dtype=np.uint8)
        x, y, w, h = cv2.boundingRect(mask)          # work inside the mask's box only
        if w == 0 or h == 0:
            continue
        color = track_color(tid)
        roi = out[y:y + h, x:x + w]
        m = mask[y:y + h, x:x + w].astype(bool)
        roi[m] = (roi[m].astype(np.float32) * (1 - alpha) + np.array(color, np.float32) * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(mask[y:y + h, x:x + w], cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(roi, contours, -1, color, 1, cv2.LINE_AA)
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        ty = max(y, th + 4)
        cv2.rectangle(out, (x, ty - th - 4), (x + tw + 4, ty), color, -1)
        cv2.putText(out, label, (x + 2, ty - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return out


class OverlayWriter:
    """Writes ``path`` (mp4, codec mp4v) frame by frame; atomic rename on close."""

    def __init__(self, path: str, fps: float, size_hw: Tuple[int, int]):
        self.path = path
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".mp4", dir=folder)
        os.close(fd)
        h, w = size_hw
        self.writer = cv2.VideoWriter(self.tmp, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (int(w), int(h)))
        if not self.writer.isOpened():
            self._discard()
            raise RuntimeErrorBase(f"OpenCV cannot write a {int(w)}x{int(h)} mp4v video to {path} (some sizes, "
                                   "e.g. 1x1, have no encoder); run with --no-overlay to skip the overlay video")
        self.size_hw = (int(h), int(w))
        self.frames = 0

    def write(self, frame_bgr: np.ndarray) -> None:
        if frame_bgr.shape[:2] != self.size_hw:
            frame_bgr = cv2.resize(frame_bgr, (self.size_hw[1], self.size_hw[0]))
        self.writer.write(frame_bgr)
        self.frames += 1

    def close(self) -> None:
        """Finish the file and move it into place."""
        if self.writer is not None:
            self.writer.release()
            self.writer = None
            _public(self.tmp)
            os.replace(self.tmp, self.path)

    def _discard(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        with contextlib.suppress(OSError):
            os.remove(self.tmp)

    def abort(self) -> None:
        """Drop the partial file (on error)."""
        self._discard()
