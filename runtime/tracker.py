"""Clip-by-clip tracker: the authors' OverTracker results, streamed with bounded memory.

Default (``TrackerParams.style == "authors"``): what ``mdqe/tracking/
OverTracker.py`` + ``MDQE.inference_vis/inference_video`` (mdqe/mdqe.py)
compute (docs/fidelity.md), for clip c with K detections:

- similarity: raw clip queries (``pred_queries``) as tracking embeddings;
  dot products with each track's memory embedding; bi-softmax = mean of the
  softmax over tracks and over detections, with the trivial direction
  dropped when there is one track or one detection; long memory (tracks
  matched within the last ``max_unseen`` = 15 clips) plus short memory
  (within ``short_unseen`` = 5 clips: mean of the long score and the
  bi-softmax over the short set);
- memory embedding of a track: over the last ``memory_clips`` = 3 clip
  slots, the average of its embeddings weighted exp(0.25 i) (i = slot
  position, newest heaviest), slots where it was not matched excluded;
- mask IoU over the frames the clip shares with earlier clips; a track's
  mask in a frame is the sign of the sum of the mask logits of the clips
  that matched it; frames where the track has no mask still count in the
  union; IoU 0 when either side is empty over all shared frames;
- S = beta1 * IoU + beta2 * sim; pairs with S <= 0.6 are zeroed BEFORE the
  Hungarian assignment (scipy linear_sum_assignment, maximize); zero pairs
  stay unmatched;
- an unmatched detection is a duplicate if its max IoU > 0.4 or max sim >
  0.6; otherwise it starts a track when its score > 2 * score_thr; while no
  track exists yet (the first clip), every detection starts a track; at most
  ``max_tracks`` tracks per video (70 YouTube-VIS, 120 OVIS);
- the authors process the video in windows of 30 clips and collapse their
  memory at each window boundary (``collapse_windows``): the open frames'
  mask logits become one averaged entry, the last 3 clips' embeddings one
  weighted slot, the window's class scores one carried-over entry for the
  tracks seen in the window's last T-1 clips. This is reproduced exactly;
- per-video score per (track, class): for each window the mean of the
  track's clip class scores in it (0 when absent), then 0.75 * mean + 0.25 *
  max over all windows of the video;
- final masks: per frame the mean of the matching clips' logits (runtime.masks
  upsamples them).

Memory: mask logits of the T open frames per live track, 3 embeddings per
track and a few [C] vectors; nothing grows with the video length. Ended
tracks keep only their scores.

``style == "paper"`` runs this project's earlier paper-style tracker
(runtime.tracker_paper).
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from .clip_filter import ClipDetections, FilterParams, ParamError, check_number
from .masks import FrameMaps
from .native import postprocess as native_pp

PRESETS = ("ytvis", "ovis", "paper")


@dataclass(frozen=True)
class TrackerParams:
    """Tracker rules. Defaults = the authors' YouTube-VIS inference; see ``preset()``."""
    style: str = "authors"            # "authors" | "paper" (runtime.tracker_paper)
    score_thr: float = 0.1            # APPLY_CLS_THRES; new tracks need > new_track_thr = 2 * score_thr
    new_track_score: Optional[float] = None   # explicit override of new_track_thr (--new-track-score)
    beta1: float = 1.0                # weight of the mask IoU term
    beta2: float = 1.0                # weight of the embedding similarity term
    match_thr: float = 0.6            # pairs with S <= match_thr are not matched
    dup_iou: float = 0.4              # unmatched detection is a duplicate if max IoU > dup_iou ...
    dup_sim: float = 0.6              # ... or max sim > dup_sim
    max_unseen: int = 15              # long memory: clips a track stays matchable unseen
    short_unseen: int = 5             # short memory (0 = off, paper)
    memory_clips: int = 3             # clip slots of the memory embedding
    memory_decay: float = 0.25        # slot weight exp(-memory_decay * age)
    max_tracks: int = 70              # tracks per video (authors' MAX_NUM_INSTANCES; 0 = no cap)
    window_clips: int = 30            # authors' 30-frame windows (video score, memory collapse)
    collapse_windows: bool = True     # reproduce the authors' memory collapse at window boundaries
    first_clip_all: bool = True       # while no track exists, every detection starts one
    tail_clip: bool = True            # the video's end adds one truncated clip of T-1 frames
    embedding: str = "pred_queries"   # tracking embedding: raw clip query (authors) | "pred_embeds"
    mask_resize: str = "nearest"      # aligned bilinear x4 then nearest (authors) | "bilinear"
    min_embed_cos: float = -1.0       # paper style only: zero sim below this cosine (-1 = off)

    def __post_init__(self):
        if self.style not in ("authors", "paper"):
            raise ParamError(f"--tracker-style must be 'authors' or 'paper', got {self.style!r}")
        check_number("score_thr", self.score_thr, 0.0, 1.0)
        if self.new_track_score is not None:
            check_number("new_track_score", self.new_track_score)
        for name in ("beta1", "beta2"):
            check_number(name, getattr(self, name), 0.0)
        if self.beta1 == 0 and self.beta2 == 0:
            raise ParamError("--beta1 and --beta2 cannot both be 0")
        for name in ("match_thr", "dup_iou", "dup_sim", "memory_decay", "min_embed_cos"):
            check_number(name, getattr(self, name))
        check_number("max_unseen", self.max_unseen, 0, integer=True)
        check_number("short_unseen", self.short_unseen, 0, integer=True)
        check_number("memory_clips", self.memory_clips, 1, integer=True)
        check_number("max_tracks", self.max_tracks, 0, integer=True)
        check_number("window_clips", self.window_clips, 1, integer=True)
        if self.embedding not in ("pred_queries", "pred_embeds"):
            raise ParamError(f"--track-embedding must be pred_queries or pred_embeds, got {self.embedding!r}")
        if self.mask_resize not in ("nearest", "bilinear"):
            raise ParamError(f"--mask-resize must be nearest or bilinear, got {self.mask_resize!r}")

    @property
    def new_track_thr(self) -> float:
        """Score a detection needs to start a track: ``new_track_score`` or 2 * score_thr (the one
        place this rule lives; callers set ``score_thr``, or ``new_track_score`` to override it)."""
        return 2.0 * self.score_thr if self.new_track_score is None else float(self.new_track_score)


def preset(name: str, **overrides) -> Tuple[FilterParams, TrackerParams]:
    """(FilterParams, TrackerParams) of a preset, with field overrides (None values ignored).

    ``ytvis``: the authors' YouTube-VIS 2019/2021 inference (R50/Swin configs: 70 tracks,
    10 detections per image -> 100 queries after the duplicate test); ``ovis``: the same with
    120 tracks and 150 queries; ``paper``: this project's earlier paper-style reading (greedy
    filters, phi_e embedding, exp(-0.5 age) over 10 matched clips, bilinear resizing, per-track
    clip scores, no window, no track cap). ``score_thr`` applies to both.
    """
    if name not in PRESETS:
        raise ParamError(f"--preset must be one of {', '.join(PRESETS)}, got {name!r}")
    ov = {k: v for k, v in overrides.items() if v is not None}
    f_names = {f.name for f in fields(FilterParams)}
    t_names = {f.name for f in fields(TrackerParams)}
    unknown = set(ov) - f_names - t_names
    if unknown:
        raise ParamError(f"unknown option(s) {sorted(unknown)}")
    if name == "paper":
        f = FilterParams(style="paper")
        t = TrackerParams(style="paper", short_unseen=0, memory_clips=10, memory_decay=0.5, max_tracks=0,
                          collapse_windows=False, first_clip_all=False, tail_clip=False,
                          embedding="pred_embeds", mask_resize="bilinear")
    elif name == "ovis":
        f, t = FilterParams(max_queries=150), TrackerParams(max_tracks=120)
    else:
        f, t = FilterParams(), TrackerParams()
    f = replace(f, **{k: v for k, v in ov.items() if k in f_names})
    t = replace(t, **{k: v for k, v in ov.items() if k in t_names})
    return f, t


def preset_for_model(model_name: str, config: Optional[dict] = None) -> str:
    """The authors' preset for a model: ``ovis`` when its name/config says OVIS, else ``ytvis``."""
    text = (model_name or "") + " " + str((config or {}).get("name", ""))
    return "ovis" if "ovis" in text.lower() else "ytvis"


@dataclass(frozen=True)
class TrackSummary:
    """What per-video scoring needs of a track (kept after the track ends)."""
    track_id: int
    scores: np.ndarray     # [C] video scores
    n_clips: int


def bi_softmax(a: np.ndarray) -> np.ndarray:
    """Mean of the softmax over axis 0 and over axis 1 of ``a`` [M,K] (paper style)."""
    def sm(x, axis):
        x = x - x.max(axis=axis, keepdims=True)
        e = np.exp(x)
        return e / e.sum(axis=axis, keepdims=True)
    return 0.5 * (sm(a, 0) + sm(a, 1))


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def ctt_similarity(mem: np.ndarray, emb: np.ndarray) -> np.ndarray:
    """The authors' bi-softmax ``get_ctt_similarity`` [Ns,Ni] of memory embeddings mem [Ns,E] and
    clip embeddings emb [Ni,E]: softmax over tracks (dropped when Ns == 1) and over detections
    (dropped when Ni == 1), averaged; 1 when Ns == Ni == 1."""
    Ns, Ni = mem.shape[0], emb.shape[0]
    if Ns == 0 or Ni == 0:
        return np.zeros((Ns, Ni), np.float32)
    feats = (mem @ emb.T).astype(np.float32)
    d2t, t2d = _softmax(feats, 0), _softmax(feats, 1)
    if Ns == 1 and Ni == 1:
        return (0.5 * (d2t + t2d)).astype(np.float32)
    ws, wi = (1 if Ns > 1 else 0), (1 if Ni > 1 else 0)
    return ((ws * d2t + wi * t2d) / max(ws + wi, 1)).astype(np.float32)


def memory_weights(n: int, decay: float) -> np.ndarray:
    """exp(decay * i), i = 0..n-1, in float32 (the authors' ``weights_mem``)."""
    return np.exp(np.arange(n, dtype=np.float64) * decay).astype(np.float32)


class ClipTracker:
    """The authors' tracker, streaming. Call ``update`` per clip (in order), ``pop_frame(f)`` once no
    future clip covers frame f, and ``finish()`` after the last clip; then ``summaries()``.

    ``num_frames``: the clip length T (default: the first clip's frame count).
    """

    def __init__(self, num_classes: int, params: TrackerParams = TrackerParams(),
                 num_frames: Optional[int] = None):
        self.params = params
        self.num_classes = num_classes
        self.T = num_frames
        self.next_id = 1
        self.clip_index = -1
        self.windows_closed = 0
        self.finished = False
        self.last_scores: Optional[np.ndarray] = None   # S of the last update (after the threshold)
        self.ended: Dict[int, Tuple[np.ndarray, np.ndarray, int]] = {}   # tid -> (VSUM, VMAX, n_clips)
        self._ids: List[int] = []          # live track ids, creation order; row i holds _ids[i]
        self._alloc = False
        self._popped: Optional[Tuple[np.ndarray, int]] = None   # (rows, pos) whose sums still await zeroing
        self._decay_w = memory_weights(max(15, params.memory_clips, 3), params.memory_decay)

    # -- state arrays, one row per live track ------------------------------------------------
    def _setup(self, dets: ClipDetections) -> None:
        if self.T is None:
            self.T = dets.num_frames
        T, (h, w), E, C = self.T, dets.mask_hw, dets.embeds.shape[1], self.num_classes
        self.hw = (h, w)
        self.R = max(self.params.memory_clips, 3, T - 1) + 1     # embedding slot ring
        cap = 8
        self.SUM = np.zeros((cap, T, h, w), np.float32)          # mask logit sums of open frames (ring f % T)
        self.CNT = np.zeros((cap, T), np.int32)
        self.MEM = np.zeros((cap, E), np.float32)                # memory embedding
        self.EMB = np.zeros((cap, self.R, E), np.float32)        # embeddings by clip slot (ring)
        self.EVALID = np.zeros((cap, self.R), bool)
        self.RSLOT = np.full(self.R, -1, np.int64)               # slot number held by each ring position
        self.LAST = np.zeros(cap, np.int64)                      # last matched clip
        self.NCLIPS = np.zeros(cap, np.int64)
        self.WCLS = np.zeros((cap, C), np.float32)               # class score sum of the current window
        self.WCNT = np.zeros(cap, np.int64)
        self.VSUM = np.zeros((cap, C), np.float32)               # sum of window scores so far
        self.VMAX = np.zeros((cap, C), np.float32)               # max of window scores so far
        # native kernels (runtime/native/postprocess.py): bit sets of SUM > 0, kept with SUM
        self._native = native_pp.available()
        if self._native:
            self.TB = np.zeros((cap, T, native_pp.words_per_map(h, w)), np.uint64)
        self._alloc = True

    def _grow(self, n: int) -> None:
        cap = self.SUM.shape[0]
        if n <= cap:
            return
        new = max(n, 2 * cap)
        for name in self._row_arrays():
            a = getattr(self, name)
            b = np.zeros((new,) + a.shape[1:], a.dtype)
            b[:cap] = a
            setattr(self, name, b)

    def _row_arrays(self) -> Tuple[str, ...]:
        names = ("SUM", "CNT", "MEM", "EMB", "EVALID", "LAST", "NCLIPS", "WCLS", "WCNT", "VSUM", "VMAX")
        return names + (("TB",) if self._native else ())

    @property
    def num_live(self) -> int:
        return len(self._ids)

    # -- windows -------------------------------------------------------------------------------
    def _slot_number(self, c: int) -> int:
        """Clip slot of clip c: inside the authors' window (slot 0 = collapsed memory) or global."""
        W = self.params.window_clips
        if not self.params.collapse_windows:
            return c
        k = c // W
        return c if k == 0 else c - k * W + 1

    def _close_window(self, boundary: int, final: bool) -> None:
        """End the window whose last clip is boundary - 1 (``final``: the video's last window)."""
        n = self.num_live
        p = self.params
        if n:
            s_w = self.WCLS[:n] / np.maximum(self.WCNT[:n], 1).astype(np.float32)[:, None]
            self.VSUM[:n] += s_w
            np.maximum(self.VMAX[:n], s_w, out=self.VMAX[:n])
        self.windows_closed += 1
        if final or not n:
            return
        if p.collapse_windows:
            T = self.T
            carry = self.LAST[:n] >= boundary - (T - 1)              # seen at frames >= boundary
            self.WCLS[:n] = np.where(carry[:, None], s_w, 0.0)
            self.WCNT[:n] = carry
            # embeddings: the last nc slots of the window, weights exp(0.25 i), into slot 0
            nc = max(3, T - 1)
            last_slot = self._slot_number(boundary - 1)
            acc = np.zeros_like(self.MEM[:n])
            wsum = np.zeros(n, np.float32)
            wts = self._decay_w
            for j, s in enumerate(range(last_slot - nc + 1, last_slot + 1)):
                if s < 0:
                    continue
                pos = s % self.R
                if self.RSLOT[pos] != s:
                    continue
                v = self.EVALID[:n, pos]
                acc += self.EMB[:n, pos] * (v * wts[j])[:, None]
                wsum += v * wts[j]
            P = acc / np.maximum(wsum, 1.0)[:, None]
            self.EMB[:n] = 0
            self.EVALID[:n] = False
            self.RSLOT[:] = -1
            self.RSLOT[0] = 0
            self.EMB[:n, 0] = P
            self.EVALID[:n, 0] = (P != 0).any(axis=1)
            # mask logits of the open frames >= boundary: one averaged entry
            for f in range(boundary, boundary + T - 1):
                pos = f % T
                c = self.CNT[:n, pos]
                hit = c > 0
                if hit.any():
                    self.SUM[:n][hit, pos] /= c[hit].astype(np.float32)[:, None, None]
                    self.CNT[:n, pos] = np.minimum(c, 1)
                    if self._native:                         # (a tiny logit may underflow to 0)
                        rows = np.flatnonzero(hit)
                        self.TB[rows, pos] = native_pp.positive_bits(self.SUM, rows, [pos])[:, 0]
        else:
            self.WCLS[:n] = 0
            self.WCNT[:n] = 0
        self._release_dead(boundary)

    def _release_dead(self, c: int) -> None:
        """Forget the masks/embeddings of tracks that can never match again (unseen > max_unseen,
        no open frames, nothing carried); keep their scores."""
        n = self.num_live
        if not n:
            return
        unseen = c - self.LAST[:n] - 1
        dead = ((unseen >= self.params.max_unseen) & (unseen >= self.params.short_unseen)
                & (self.CNT[:n].sum(1) == 0) & (self.WCNT[:n] == 0))
        if not dead.any():
            return
        keep = np.flatnonzero(~dead)
        for i in np.flatnonzero(dead):
            self.ended[self._ids[i]] = (self.VSUM[i].copy(), self.VMAX[i].copy(), int(self.NCLIPS[i]))
        for name in self._row_arrays():
            a = getattr(self, name)
            a[:len(keep)] = a[keep]
            a[len(keep):n] = 0
        self._ids = [self._ids[i] for i in keep]

    # -- association -----------------------------------------------------------------------
    def _mask_iou(self, dets: ClipDetections, c: int) -> np.ndarray:
        n, K, T = self.num_live, len(dets), self.T
        n_ov = min(dets.num_frames, T - 1) if c > 0 else 0
        if n == 0 or K == 0 or n_ov == 0:
            return np.zeros((n, K), np.float32)
        pos = [(c + i) % T for i in range(n_ov)]
        if self._native:
            dbits = dets.bits
            if dbits is None:
                src, qs = dets.mask_source()
                dbits = native_pp.positive_bits(src, qs, np.arange(n_ov))
            inter, area_t, area_d = native_pp.bit_intersections(self.TB, np.arange(n), pos, dbits, np.arange(K),
                                                                np.arange(n_ov))
            num = inter.astype(np.float32)
        else:
            tb = np.stack([self.SUM[:n, p] > 0 for p in pos], axis=1).reshape(n, -1)
            db = (dets.masks[:, :n_ov] > 0).reshape(K, -1)
            area_t, area_d = tb.sum(axis=1), db.sum(axis=1)
            cols = np.flatnonzero(tb.any(axis=0) & db.any(axis=0))
            if cols.size:
                num = tb[:, cols].astype(np.float32) @ db[:, cols].T.astype(np.float32)
            else:
                num = np.zeros((n, K), np.float32)
        den = area_t.astype(np.float32)[:, None] + area_d.astype(np.float32)[None, :] - num
        valid = (area_t > 0)[:, None] & (area_d > 0)[None, :]
        return np.where(valid, num / (den + np.float32(1e-6)), 0.0).astype(np.float32)

    def _similarity(self, dets: ClipDetections, c: int) -> np.ndarray:
        n, K, p = self.num_live, len(dets), self.params
        out = np.zeros((n, K), np.float32)
        if n == 0 or K == 0:
            return out
        unseen = c - self.LAST[:n] - 1
        long = np.flatnonzero(unseen < p.max_unseen)
        out[long] = ctt_similarity(self.MEM[long], dets.embeds)
        if p.short_unseen > 0:
            short = np.flatnonzero(unseen < p.short_unseen)
            if short.size:
                out[short] = 0.5 * (out[short] + ctt_similarity(self.MEM[short], dets.embeds))
        return out

    def update(self, dets: ClipDetections) -> List[Tuple[int, int]]:
        """Associate one clip's detections; returns [(detection index, track id)] for the kept ones."""
        p = self.params
        if p.style != "authors":
            raise ParamError("use runtime.tracker.make_tracker for the paper style")
        if self.finished:
            raise RuntimeError("update() after finish()")
        self._flush()
        if not self._alloc:
            self._setup(dets)
        self.clip_index += 1
        c = self.clip_index
        if c > 0 and c % p.window_clips == 0:
            self._close_window(c, final=False)
        n, K = self.num_live, len(dets)
        matched_rows: List[int] = []
        matched_dets: List[int] = []
        if self.next_id == 1 and p.first_clip_all:
            new = list(range(K))
        else:
            miou = self._mask_iou(dets, c)
            sim = self._similarity(dets, c)
            S = p.beta1 * miou + p.beta2 * sim
            above = S > p.match_thr
            S = S * above
            self.last_scores = S
            if n and K:
                rows, cols = linear_sum_assignment(S, maximize=True)
                keep = above[rows, cols]                 # zero pairs stay unmatched
                matched_rows, matched_dets = rows[keep].tolist(), cols[keep].tolist()
            free = dets.best > p.new_track_thr
            free[matched_dets] = False
            if n:          # too like a live track (mask IoU or similarity): not a new one
                free &= ~((miou.max(axis=0) > p.dup_iou) | (sim.max(axis=0) > p.dup_sim))
            new = np.flatnonzero(free).tolist()
        if p.max_tracks:
            new = new[:max(0, p.max_tracks - (self.next_id - 1))]
        out = [(k, self._ids[r]) for r, k in zip(matched_rows, matched_dets)]
        if new:
            self._grow(n + len(new))
            for k in new:
                self._ids.append(self.next_id)
                out.append((k, self.next_id))
                self.next_id += 1
            rows_new = list(range(n, n + len(new)))
            self.LAST[rows_new] = c       # (unseen counters start at 0)
        rows = np.asarray(matched_rows + (list(range(n, n + len(new)))), np.int64)
        ks = np.asarray(matched_dets + new, np.int64)
        self._write(dets, rows, ks, c)
        return sorted(out, key=lambda x: x[1])

    def _write(self, dets: ClipDetections, rows: np.ndarray, ks: np.ndarray, c: int) -> None:
        """The authors' ``_update_memory`` for rows matched to detections ks in clip c."""
        p, T = self.params, self.T
        slot = self._slot_number(c)
        pos = slot % self.R
        n = self.num_live
        self.EMB[:n, pos] = 0
        self.EVALID[:n, pos] = False
        self.RSLOT[pos] = slot
        if rows.size == 0:
            return
        src, qs = dets.mask_source()
        fps = [(dets.start + i) % T for i in range(dets.num_frames)]
        if self._native:    # a map with no term yet is overwritten: popped sums are never zeroed
            fresh = self.CNT[rows][:, fps] == 0
            native_pp.accumulate(self.SUM, rows, fps, src, qs[ks], bits=self.TB, fresh=fresh)
        else:
            for i, fp in enumerate(fps):
                for r, q in zip(rows.tolist(), qs[ks].tolist()):    # in place: no gathered copies
                    acc = self.SUM[r, fp]
                    np.add(acc, src[q, i], out=acc)
        for fp in fps:
            self.CNT[rows, fp] += 1
        self.WCLS[rows] += dets.scores[ks]
        self.WCNT[rows] += 1
        self.NCLIPS[rows] += 1
        self.LAST[rows] = c
        e = dets.embeds[ks]
        self.EMB[rows, pos] = e
        self.EVALID[rows, pos] = True
        if slot == 0:
            self.MEM[rows] = e
            return
        start = max(slot - (p.memory_clips - 1), 0)
        acc = np.zeros((rows.size, e.shape[1]), np.float32)
        wsum = np.zeros(rows.size, np.float32)
        for j, s in enumerate(range(start, slot + 1)):
            q = s % self.R
            if self.RSLOT[q] != s:
                continue
            wj = self._decay_w[j]
            acc += self.EMB[rows, q] * wj
            wsum += self.EVALID[rows, q] * wj
        self.MEM[rows] = acc / np.maximum(wsum, 1.0)[:, None]

    # -- streaming output ------------------------------------------------------------------
    def pop_frame_maps(self, frame: int) -> FrameMaps:
        """Final mask logits of ``frame`` per track (mean over the clips that matched the track and
        cover the frame), by id, read in place from the sums: valid until the next call of this
        tracker, which zeroes them (the frame is forgotten)."""
        self._flush()
        if not self._alloc or not self.num_live:
            return FrameMaps.stack([], [])
        n, pos = self.num_live, frame % self.T
        cnt = self.CNT[:n, pos]
        rows = np.flatnonzero(cnt > 0)
        out = FrameMaps([self._ids[r] for r in rows.tolist()], self.SUM, rows, pos, cnt[rows],
                        bits=self.TB[rows, pos] if self._native else None)      # (a copy)
        self.CNT[rows, pos] = 0
        if self._native:
            self.TB[rows, pos] = 0
        self._popped = (rows, pos)
        return out

    def pop_frame(self, frame: int) -> List[Tuple[int, np.ndarray]]:
        """``pop_frame_maps`` as [(track id, [h,w] logits)] (copies)."""
        items = self.pop_frame_maps(frame).items()
        self._flush()
        return items

    def _flush(self) -> None:
        """Zero the sums of the last popped frame (deferred so that its FrameMaps reads them in place).
        With the native kernels they stay: the next term of a map with CNT 0 overwrites it, and nothing
        else reads a sum whose CNT is 0 (its bit set is zeroed at the pop)."""
        if self._popped is not None:
            rows, pos = self._popped
            if not self._native:
                self.SUM[rows, pos] = 0
            self._popped = None

    def finish(self) -> None:
        """Close the last window (after the last clip); idempotent."""
        self._flush()
        if not self.finished:
            if self.clip_index >= 0:
                self._close_window(self.clip_index + 1, final=True)
            self.finished = True

    def _scores(self, vsum: np.ndarray, vmax: np.ndarray, open_sum=None, open_max=None) -> np.ndarray:
        nw = max(self.windows_closed, 1)
        return (np.float32(0.75) * (vsum / np.float32(nw)) + np.float32(0.25) * vmax).astype(np.float32)

    def summaries(self) -> Iterator[TrackSummary]:
        """Per-track video scores (call after ``finish()``): 0.75 mean + 0.25 max over windows."""
        merged = {tid: (v[0], v[1], v[2]) for tid, v in self.ended.items()}
        for i, tid in enumerate(self._ids):
            merged[tid] = (self.VSUM[i], self.VMAX[i], int(self.NCLIPS[i]))
        for tid in sorted(merged):
            vs, vm, nc = merged[tid]
            yield TrackSummary(tid, self._scores(vs, vm), nc)

    def display_info(self, tid: int) -> Tuple[float, int]:
        """(running video score, its class index) of a track (overlay labels), counting the
        current window as if it ended now."""
        if tid in self.ended:
            s = self._scores(*self.ended[tid][:2])
        else:
            i = self._ids.index(tid)
            s_w = self.WCLS[i] / max(int(self.WCNT[i]), 1)
            nw = self.windows_closed + (0 if self.finished else 1)
            s = 0.75 * (self.VSUM[i] + (0 if self.finished else s_w)) / max(nw, 1) + \
                0.25 * np.maximum(self.VMAX[i], s_w)
        c = int(np.argmax(s))
        return float(s[c]), c


def make_tracker(num_classes: int, params: TrackerParams = TrackerParams(), num_frames: Optional[int] = None):
    """The tracker of ``params.style``: ClipTracker (authors) or tracker_paper.PaperClipTracker."""
    if params.style == "paper":
        from .tracker_paper import PaperClipTracker
        return PaperClipTracker(num_classes, params)
    return ClipTracker(num_classes, params, num_frames=num_frames)


def select_pairs(summaries, min_score: float = 0.05, min_keep: int = 10) -> List[Tuple[int, int, float]]:
    """Per-video (track, class) pairs to report: all pairs sorted by score, keep the top
    max(#pairs with score > min_score, min_keep). Returns [(track id, class index, score)]."""
    pairs = [(s.track_id, c, float(s.scores[c])) for s in summaries for c in range(len(s.scores))]
    pairs.sort(key=lambda x: (-x[2], x[0], x[1]))
    n = max(sum(1 for p in pairs if p[2] > min_score), min_keep)
    return pairs[:n]
