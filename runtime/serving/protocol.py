"""What the ``mdqe_video`` model and its clients exchange (docs/serving.md, "The mdqe_video protocol").

One stream = one sequence of the Triton sequence batcher = one correlation id (``sequence_id``).
Each request carries one frame; the first has ``sequence_start``, the last ``sequence_end``.

Inputs
    FRAME        UINT8 [H,W,3]  BGR frame as OpenCV decodes it; an END request may carry an empty
                                frame [0,0,3] (flush only: a camera does not know its last frame)
    FRAME_INDEX  INT64 [1]      0, 1, 2, ... per stream (frames out of order are refused)
    START, END   control inputs set by the sequence batcher from sequence_start / sequence_end

Outputs (per request; K rows = instances of the frames that became final with this request)
    FINAL_FRAMES INT64 [F]      frames final after this request (a frame is final once no
                                future clip covers it: frame i-T+1 after frame i; all the rest on END)
    INST_FRAME   INT64 [K]      frame of each instance row
    TRACK_ID     INT64 [K]      track id (= ``track_id`` in results.json)
    CLASS_ID     INT64 [K]      class index of the track's best running video score (overlay label)
    SCORE        FP64  [K]      that running video score
    RLE_COUNTS   UINT8 [B]      pycocotools compressed RLE ``counts`` strings, utf-8, concatenated
    RLE_OFFSETS  INT64 [K+1]    row k's counts are RLE_COUNTS[off[k]:off[k+1]]
    MASK_SIZE    INT64 [2]      original (height, width) of the masks
    VIDEO_TRACK, VIDEO_CLASS INT64 [P], VIDEO_SCORE FP64 [P]
                                on END: the per-video (track, class, score) pairs of results.json
                                (runtime.tracker.select_pairs); empty before
    OPEN_STREAMS INT64 [1]      streams this model instance holds after the request

Every tensor is numeric (no BYTES): the Python-backend stub of nvidia-pytriton 0.7.0 exchanges
numpy data correctly only through DLPack under numpy 2 (see python_models.py).
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np

VIDEO_MODEL = "mdqe_video"
ENCODER_MODEL = "mdqe_encoder"
DECODER_MODEL = "mdqe_decoder"

FRAME, FRAME_INDEX, START, END = "FRAME", "FRAME_INDEX", "START", "END"
FRAME_OUTPUTS = ("FINAL_FRAMES", "INST_FRAME", "TRACK_ID", "CLASS_ID", "SCORE", "RLE_COUNTS", "RLE_OFFSETS",
                 "MASK_SIZE")
VIDEO_OUTPUTS = ("VIDEO_TRACK", "VIDEO_CLASS", "VIDEO_SCORE")
OUTPUTS = FRAME_OUTPUTS + VIDEO_OUTPUTS + ("OPEN_STREAMS",)
OUTPUT_TYPES = {"FINAL_FRAMES": "INT64", "INST_FRAME": "INT64", "TRACK_ID": "INT64", "CLASS_ID": "INT64",
                "SCORE": "FP64", "RLE_COUNTS": "UINT8", "RLE_OFFSETS": "INT64", "MASK_SIZE": "INT64",
                "VIDEO_TRACK": "INT64", "VIDEO_CLASS": "INT64", "VIDEO_SCORE": "FP64", "OPEN_STREAMS": "INT64"}
OUTPUT_DIMS = {"MASK_SIZE": [2], "OPEN_STREAMS": [1]}          # all others [-1]

# one finalised frame: (frame index, [(track id, class index, running score, rle dict)])
FrameResult = Tuple[int, List[Tuple[int, int, float, dict]]]


def pack_results(frames: Sequence[FrameResult], mask_size: Tuple[int, int],
                 pairs: Iterable[Tuple[int, int, float]] = (), open_streams: int = 0) -> Dict[str, np.ndarray]:
    """The output tensors of one response (see the module docstring)."""
    rows = [(f, tid, cls, score, rle) for f, items in frames for tid, cls, score, rle in items]
    counts = [r[4]["counts"].encode("utf-8") for r in rows]
    offsets = np.zeros(len(rows) + 1, np.int64)
    if counts:
        offsets[1:] = np.cumsum([len(c) for c in counts])
    pairs = list(pairs)
    return {
        "FINAL_FRAMES": np.array([f for f, _ in frames], np.int64),
        "INST_FRAME": np.array([r[0] for r in rows], np.int64),
        "TRACK_ID": np.array([r[1] for r in rows], np.int64),
        "CLASS_ID": np.array([r[2] for r in rows], np.int64),
        "SCORE": np.array([r[3] for r in rows], np.float64),
        "RLE_COUNTS": np.frombuffer(b"".join(counts), np.uint8).copy(),
        "RLE_OFFSETS": offsets,
        "MASK_SIZE": np.array(mask_size, np.int64),
        "VIDEO_TRACK": np.array([p[0] for p in pairs], np.int64),
        "VIDEO_CLASS": np.array([p[1] for p in pairs], np.int64),
        "VIDEO_SCORE": np.array([p[2] for p in pairs], np.float64),
        "OPEN_STREAMS": np.array([open_streams], np.int64),
    }


def unpack_results(get) -> Tuple[List[FrameResult], List[Tuple[int, int, float]], int]:
    """Inverse of pack_results; ``get(name) -> np.ndarray``. Returns (frames, pairs, open streams)."""
    finals = [int(f) for f in get("FINAL_FRAMES").reshape(-1)]
    inst_frame, tids, cls = get("INST_FRAME").reshape(-1), get("TRACK_ID").reshape(-1), get("CLASS_ID").reshape(-1)
    scores = get("SCORE").reshape(-1)
    buf = get("RLE_COUNTS").reshape(-1).tobytes()
    off = get("RLE_OFFSETS").reshape(-1)
    h, w = (int(x) for x in get("MASK_SIZE").reshape(-1))
    per_frame: Dict[int, list] = {f: [] for f in finals}
    for k in range(len(tids)):
        rle = {"size": [h, w], "counts": buf[off[k]:off[k + 1]].decode("utf-8")}
        per_frame[int(inst_frame[k])].append((int(tids[k]), int(cls[k]), float(scores[k]), rle))
    pairs = [(int(t), int(c), float(s)) for t, c, s in zip(get("VIDEO_TRACK").reshape(-1),
                                                          get("VIDEO_CLASS").reshape(-1),
                                                          get("VIDEO_SCORE").reshape(-1))]
    return [(f, per_frame[f]) for f in finals], pairs, int(get("OPEN_STREAMS").reshape(-1)[0])
