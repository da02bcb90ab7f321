"""Frame sources (OpenCV): a video file, a folder of frames, a camera index, or a network stream.

Frames are yielded one at a time as BGR uint8 arrays [H, W, 3]; nothing is
buffered here, so memory does not depend on the video length.

A source that ends before its end (a truncated file whose container announces
more frames, an undecodable image in a folder, a network stream that dropped
and could not be reopened) stops cleanly: the frames so far are yielded and
``stop_reason`` says why it stopped early (None for a normal end).
"""
from __future__ import annotations

import os
import re
import time
from typing import Iterator, List, Optional, Sequence, Union

import cv2
import numpy as np

from .errors import VideoError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

# A URL OpenCV's FFmpeg backend may open: rtsp://, rtsps://, rtmp://, http(s)://, udp://, tcp://, srt://, ...
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
# Reconnect policy of a dropped network stream: one reopen attempt after each delay (seconds).
RECONNECT_DELAYS = (0.5, 1.0, 2.0)
# How long opening / reading a network stream may block (milliseconds).
STREAM_TIMEOUT_MS = 10000


def is_stream_url(source) -> bool:
    """True for a URL (scheme://...) that is handed to OpenCV/FFmpeg as a network stream."""
    return isinstance(source, str) and bool(_URL.match(source)) and not source.lower().startswith("file://")


def _redact(url: str) -> str:
    """The URL without user:password (for messages and results)."""
    return re.sub(r"://[^/@]*@", "://***@", url)


class FrameSource:
    """Iterate the frames of ``source``.

    ``source``: path of a video file, path of a folder of images (sorted by
    name), a camera index (int, or a string of digits that is not an
    existing path), or a network stream URL (rtsp://, http(s)://, any URL
    OpenCV's FFmpeg backend opens). ``max_frames`` stops early. Raises
    VideoError for a missing path, an unreadable/corrupt video, a stream
    that cannot be opened, or a source without frames. A stream that drops
    is reopened after each of ``reconnect_delays`` seconds (bounded); when
    that fails the source ends with ``stop_reason`` set. Attributes: ``fps``
    (30 when unknown), ``frame_count`` (estimate, None for cameras and
    streams), ``name`` (for results), ``kind``
    ("file"|"folder"|"camera"|"stream"), ``stop_reason`` (None, or why the
    source ended before its end), ``reconnects`` (successful reopenings).
    """

    stop_reason: Optional[str] = None
    reconnects = 0
    reconnect_delays: Sequence[float] = RECONNECT_DELAYS
    # a folder image after the first that cannot be decoded ends the video early (stop_reason set,
    # outputs for the frames so far); False: it raises VideoError (FrameListSource, dataset videos)
    partial_on_bad_frame = True

    def __init__(self, source: Union[str, int], max_frames: Optional[int] = None,
                 reconnect_delays: Sequence[float] = RECONNECT_DELAYS):
        self.source = source
        self.max_frames = max_frames if (max_frames is None or max_frames > 0) else None
        self._files: List[str] = []
        self._cap = None
        self._first: Optional[np.ndarray] = None
        self.stop_reason: Optional[str] = None
        self.reconnect_delays = tuple(reconnect_delays)
        self.reconnects = 0
        if is_stream_url(source):
            self.kind = "stream"
            self.name = re.sub(r"[^A-Za-z0-9._-]+", "_", _redact(source).split("://", 1)[1]).strip("_")[:80] or "stream"
            self._cap = self._open_stream()
            if self._cap is None:
                raise VideoError(f"cannot open stream {_redact(source)} (unreachable, refused, or not a video "
                                 "OpenCV/FFmpeg can decode)")
        elif isinstance(source, int) or (isinstance(source, str) and source.isdigit() and not os.path.exists(source)):
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

    def _open_stream(self):
        """A cv2.VideoCapture of the stream URL with bounded open/read timeouts, or None."""
        params = []
        for name, value in (("CAP_PROP_OPEN_TIMEOUT_MSEC", STREAM_TIMEOUT_MS),
                            ("CAP_PROP_READ_TIMEOUT_MSEC", STREAM_TIMEOUT_MS)):
            if hasattr(cv2, name):
                params += [getattr(cv2, name), value]
        cap = cv2.VideoCapture(self.source, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    def _reconnect(self, index: int) -> Optional[np.ndarray]:
        """After a failed read of a stream: reopen it (bounded attempts); the next frame, or None."""
        for delay in self.reconnect_delays:
            if self._cap is not None:
                self._cap.release()
                self._cap = None
            time.sleep(delay)
            self._cap = self._open_stream()
            if self._cap is None:
                continue
            ok, frame = self._cap.read()
            if ok and frame is not None:
                self.reconnects += 1
                return frame
        attempts = len(self.reconnect_delays)
        self.stop_reason = (f"the stream {_redact(str(self.source))} dropped after {index} frames and could not be "
                            f"reopened ({attempts} attempt{'s' if attempts != 1 else ''})")
        return None

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
                if index == 0 or not self.partial_on_bad_frame:
                    raise VideoError(f"cannot decode image {self._files[index]} (corrupt or unsupported)")
                self.stop_reason = (f"cannot decode image {self._files[index]} (corrupt or unsupported); "
                                    f"stopped after {index} frames")
            return img
        if self._cap is None:
            return None
        ok, frame = self._cap.read()
        if not ok or frame is None:
            frame = None
            if self.kind == "stream" and index > 0:
                announced = self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0
                if not (0 < announced < 1e12 and index >= int(announced)):   # not the end of a served file
                    frame = self._reconnect(index)
            elif self.kind == "file" and index > 0:
                announced = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
                if index < announced:
                    self.stop_reason = (f"the video ended after {index} of the {announced} frames its container "
                                        "announces (truncated or corrupt file)")
            if frame is None:
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

    partial_on_bad_frame = False   # a dataset video with a corrupt frame fails as a whole

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
