"""Paper-style clip tracker (option ``--preset paper``; paper Sec. 3.4, Fig. 4, Eq. 7).

This project's earlier reading of the paper, kept as an option; the default
tracker is runtime.tracker.ClipTracker (the authors' OverTracker results).

For clip l with K detections and M live tracks (seen within ``max_unseen``
clips) the score matrix is

    S = beta1 * mIoU(M^m, M) + beta2 * sim(q^m, q)            (Eq. 7)

- mIoU: video-level mask IoU (sum of intersections / sum of unions) over the
  frames the clip shares with the track's memory masks. A track's memory
  mask of a frame is the average of the mask logits of the clips that
  matched it and cover that frame (the same average that forms the final
  mask); only frames that a future clip still covers are kept, so memory is
  bounded by T frames per track.
- sim: bi-softmax of the dot products between the tracks' memory embeddings
  (exp-weighted average of the embeddings of the last ``memory_clips``
  matched clips, weight exp(-memory_decay * age)) and the clip embeddings:
  mean of the softmax over tracks and the softmax over detections.

Assignment by ``scipy.optimize.linear_sum_assignment`` (maximize); pairs
with S <= match_thr stay unmatched. An unmatched detection is a duplicate
(dropped) if its max mIoU with a track > dup_iou or its max sim > dup_sim;
otherwise it starts a track when its best class score > new_track_score
(2 * score_thr). A track unseen for more than ``max_unseen`` clips is ended.

Optional (not in the paper, off by default): ``min_embed_cos`` zeroes sim for
pairs whose embedding cosine is below it; with a single live track the
bi-softmax is 1 for any detection, so this guards against handing a
disappeared track to a newcomer.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from .clip_filter import ClipDetections
from .masks import FrameMaps
from .tracker import TrackerParams, TrackSummary, bi_softmax


@dataclass
class Track:
    """One tracked instance. Memory: O(memory_clips * E + T * h * w + C)."""
    track_id: int
    num_classes: int
    memory_clips: int
    first_clip: int = 0
    last_clip: int = 0
    n_clips: int = 0
    embeds: deque = field(default=None)
    score_sum: np.ndarray = field(default=None)
    score_max: np.ndarray = field(default=None)
    open_frames: Dict[int, list] = field(default_factory=dict)   # frame -> [logit sum [h,w], count]

    def __post_init__(self):
        self.embeds = deque(maxlen=self.memory_clips)
        self.score_sum = np.zeros(self.num_classes, np.float64)
        self.score_max = np.zeros(self.num_classes, np.float64)

    def add(self, dets: ClipDetections, k: int, clip_index: int) -> None:
        """Append detection ``k`` of clip ``clip_index`` to this track."""
        self.embeds.append(dets.embeds[k])
        s = dets.scores[k].astype(np.float64)
        self.score_sum += s
        np.maximum(self.score_max, s, out=self.score_max)
        self.n_clips += 1
        self.last_clip = clip_index
        for i in range(dets.num_frames):
            f = dets.start + i
            entry = self.open_frames.get(f)
            if entry is None:
                self.open_frames[f] = [dets.masks[k, i].copy(), 1]
            else:
                entry[0] += dets.masks[k, i]
                entry[1] += 1

    def memory_embedding(self, decay: float) -> np.ndarray:
        """Exp-weighted average of the remembered clip embeddings [E] (newest weighs most)."""
        e = np.stack(self.embeds)                    # oldest .. newest
        ages = np.arange(len(e) - 1, -1, -1, dtype=np.float32)
        w = np.exp(-decay * ages)
        return (w[:, None] * e).sum(0) / w.sum()

    def video_scores(self) -> np.ndarray:
        """Per-class video score [C]: 0.75 * mean + 0.25 * max of the clip scores."""
        if self.n_clips == 0:
            return np.zeros(self.num_classes)
        return 0.75 * self.score_sum / self.n_clips + 0.25 * self.score_max


class PaperClipTracker:
    """Associates the clips of one video. Call ``update`` per clip (in order),
    then ``pop_frame(f)`` once no future clip covers frame f."""

    def __init__(self, num_classes: int, params: TrackerParams = TrackerParams()):
        self.params = params
        self.num_classes = num_classes
        self.tracks: Dict[int, Track] = {}            # live tracks
        self.ended: Dict[int, TrackSummary] = {}      # finished tracks (summaries only)
        self.next_id = 1
        self.clip_index = -1
        self.last_scores: Optional[np.ndarray] = None  # S of the last update (for inspection)

    # -- association -------------------------------------------------------
    def _mask_iou(self, tracks: List[Track], dets: ClipDetections) -> np.ndarray:
        M, K = len(tracks), len(dets)
        inter = np.zeros((M, K), np.float64)
        union = np.zeros((M, K), np.float64)
        if M == 0 or K == 0:
            return inter.astype(np.float32)
        for i in range(dets.num_frames):
            f = dets.start + i
            rows = [m for m, t in enumerate(tracks) if f in t.open_frames]
            if not rows:
                continue
            d = (dets.masks[:, i] > 0).reshape(K, -1).astype(np.float32)
            tm = np.stack([(tracks[m].open_frames[f][0] > 0).reshape(-1) for m in rows]).astype(np.float32)
            it = tm @ d.T
            inter[rows] += it
            union[rows] += tm.sum(1)[:, None] + d.sum(1)[None, :] - it
        return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)

    def _similarity(self, tracks: List[Track], dets: ClipDetections) -> np.ndarray:
        if not tracks or len(dets) == 0:
            return np.zeros((len(tracks), len(dets)), np.float32)
        mem = np.stack([t.memory_embedding(self.params.memory_decay) for t in tracks]).astype(np.float32)
        sim = bi_softmax(mem @ dets.embeds.T)
        if self.params.min_embed_cos > -1.0:
            mu = mem / np.maximum(np.linalg.norm(mem, axis=1, keepdims=True), 1e-12)
            du = dets.embeds / np.maximum(np.linalg.norm(dets.embeds, axis=1, keepdims=True), 1e-12)
            sim = np.where(mu @ du.T >= self.params.min_embed_cos, sim, 0.0)
        return sim.astype(np.float32)

    def update(self, dets: ClipDetections) -> List[Tuple[int, int]]:
        """Associate one clip's detections; returns [(detection index, track id)] for the kept ones."""
        p = self.params
        self.clip_index += 1
        ci = self.clip_index
        # end tracks unseen too long whose frames are all final
        for tid in [tid for tid, t in self.tracks.items()
                    if ci - t.last_clip > p.max_unseen and not t.open_frames]:
            self._end(tid)
        cands = [t for t in self.tracks.values() if ci - t.last_clip <= p.max_unseen]
        miou = self._mask_iou(cands, dets)
        sim = self._similarity(cands, dets)
        S = p.beta1 * miou + p.beta2 * sim
        self.last_scores = S
        out: List[Tuple[int, int]] = []
        matched = set()
        if cands and len(dets):
            rows, cols = linear_sum_assignment(S, maximize=True)
            for r, c in zip(rows, cols):
                if S[r, c] > p.match_thr:
                    cands[r].add(dets, int(c), ci)
                    out.append((int(c), cands[r].track_id))
                    matched.add(int(c))
        for k in range(len(dets)):
            if k in matched:
                continue
            if cands and (float(miou[:, k].max()) > p.dup_iou or float(sim[:, k].max()) > p.dup_sim):
                continue  # duplicate of an existing track
            if float(dets.scores[k].max()) > p.new_track_thr:
                t = Track(self.next_id, self.num_classes, p.memory_clips, first_clip=ci)
                self.next_id += 1
                t.add(dets, k, ci)
                self.tracks[t.track_id] = t
                out.append((k, t.track_id))
        return sorted(out, key=lambda x: x[1])

    # -- streaming output ---------------------------------------------------
    def pop_frame(self, frame: int) -> List[Tuple[int, np.ndarray]]:
        """Final mask logits of ``frame`` [h,w] per track (mean over the clips that matched the
        track and cover the frame), as [(track id, logits)]; forgets the frame."""
        out = []
        for tid, t in self.tracks.items():
            entry = t.open_frames.pop(frame, None)
            if entry is not None:
                out.append((tid, entry[0] / entry[1]))
        return out

    def pop_frame_maps(self, frame: int) -> FrameMaps:
        """``pop_frame`` as FrameMaps (the interface of runtime.tracker.ClipTracker)."""
        items = self.pop_frame(frame)
        return FrameMaps.stack([tid for tid, _ in items], [m for _, m in items])

    def finish(self) -> None:
        """Nothing to close (per-track clip scores); for the common tracker interface."""

    def _end(self, tid: int) -> None:
        t = self.tracks.pop(tid)
        self.ended[tid] = TrackSummary(tid, t.video_scores(), t.n_clips)

    def summaries(self) -> Iterator[TrackSummary]:
        """Summaries of every track of the video so far (ended and live), by id."""
        live = {tid: TrackSummary(tid, t.video_scores(), t.n_clips) for tid, t in self.tracks.items()}
        merged = {**self.ended, **live}
        for tid in sorted(merged):
            yield merged[tid]

    def display_info(self, tid: int) -> Tuple[float, int]:
        """(best video score so far, its class index) of a live track (overlay labels)."""
        t = self.tracks.get(tid)
        if t is None:
            s = self.ended[tid].scores
        else:
            s = t.video_scores()
        c = int(np.argmax(s))
        return float(s[c]), c

