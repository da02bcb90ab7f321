"""Parity stage "tracker": per-clip filtering + tracker + mask output, ours vs the authors'.

The same per-clip decoder outputs (synthetic clip sequences with crossings,
occlusions, objects that appear later, a mid-score ghost in the first clip
and per-clip noise on masks, scores and queries) are fed to

- the authors' ``MDQE.inference_clip`` + ``OverTracker`` + the window /
  ``get_result`` / ``aligned_bilinear`` / ``inference_video`` steps of
  ``MDQE.inference_vis`` (their code, imported by tools.parity.authors_env;
  the clip schedule of ``inference_vis`` is replayed here because their
  loop also runs the model), and
- ours: runtime.clip_filter.filter_clip + runtime.tracker.ClipTracker +
  runtime.masks.MaskPostprocessor, streamed frame by frame as runtime.pipeline
  does.

Compared: per-frame track masks at the original size (pixels that differ),
track ids (the authors' instance index i is our track id i + 1), per-(track,
class) video scores, and the reported (track, class) pairs. Masks enter the
authors' ``inference_clip`` as ``mask_coeff = I`` and ``mask_feats = the
clip's mask logits`` (their einsum then returns the logits exactly).

    python -m tools.parity.tracker --authors-repo PATH [--output report.json]
    python -m tools.authors_parity --authors-repo PATH --stages tracker
"""
from __future__ import annotations

import math
import sys
import types
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np

from runtime.backends.fake import SyntheticObject, SyntheticScene
from runtime.clip_filter import filter_clip
from runtime.masks import MaskPostprocessor
from runtime.preprocess import FrameGeometry
from runtime.tracker import ClipTracker, preset, select_pairs

T = 4


@dataclass
class Sequence:
    """One synthetic clip sequence: scene, video length, geometry, preset, per-clip noise."""
    name: str
    scene: SyntheticScene
    frames: int
    geometry: FrameGeometry
    preset: str = "ytvis"
    noise: float = 1.5          # std of per-clip noise on mask logits (clips disagree near edges)
    ghost: bool = True          # a mid-score query in the first clip (score in (0.1, 0.2])


def sequences() -> List[Sequence]:
    g1 = FrameGeometry((120, 210), (120, 210), (128, 224))        # padded rows/cols in the mask map
    g2 = FrameGeometry((240, 420), (120, 210), (128, 224))        # nearest x2 to the original size
    busy = [
        SyntheticObject(0, 0.3, 0.4, ax=0.25, period=40, phase=0.0, radius=0.14),
        SyntheticObject(1, 0.7, 0.4, ax=-0.25, period=40, phase=0.0, radius=0.13),     # crosses 0
        SyntheticObject(2, 0.5, 0.75, ay=0.1, period=30, radius=0.1, hidden=((12, 19), (44, 47))),
        SyntheticObject(3, 0.15, 0.2, ax=0.05, period=25, radius=0.08, start=20, end=70),
        SyntheticObject(4, 0.85, 0.8, ay=-0.1, period=35, radius=0.09, start=33),
        SyntheticObject(0, 0.5, 0.2, ax=0.3, period=50, phase=1.0, radius=0.07, start=5, hide_every=(20, 8, 12)),
    ]
    return [
        Sequence("crossing+occlusion+late object, 70 frames", SyntheticScene(num_classes=40, seed=1), 70, g1),
        Sequence("busy: 6 objects, 2 crossings, 3 occlusions, 2 late, OVIS preset, 95 frames",
                 SyntheticScene(objects=busy, num_classes=25, seed=2), 95, g2, preset="ovis"),
        Sequence("window edge: 61 frames, heavy noise", SyntheticScene(num_classes=40, seed=3), 61, g1, noise=3.0),
        Sequence("short video: 3 frames (< T)", SyntheticScene(num_classes=40, seed=4), 3, g1),
    ]


def clip_outputs(seq: Sequence, start: int, n: int) -> Dict[str, np.ndarray]:
    """Decoder outputs of the clip of frames start..start+n-1 (n <= T) with per-clip noise."""
    h, w = seq.geometry.padded[0] // 4, seq.geometry.padded[1] // 4
    out = seq.scene.decoder_outputs(list(range(start, start + n)), h, w)
    rng = np.random.default_rng(1000 * seq.scene.seed + start)
    m = out["pred_masks"]
    obj = m.reshape(m.shape[0], -1).max(1) > -8                        # object (and duplicate) queries
    m[obj] += (seq.noise * rng.standard_normal(m[obj].shape)).astype(np.float32)
    out["pred_logits"] += (0.3 * rng.standard_normal(out["pred_logits"].shape)).astype(np.float32)
    if seq.ghost and start == 0:                                        # a mid-score ghost query
        q = int(np.flatnonzero(~obj)[0])
        out["pred_logits"][q, 7 % out["pred_logits"].shape[1]] = np.float32(math.log(0.15 / 0.85))
        yy, xx = np.mgrid[:h, :w]
        blob = (4.0 - np.hypot(yy - 0.6 * h, xx - 0.75 * w)).astype(np.float32)
        out["pred_masks"][q] = np.clip(blob * 2, -8, 8)[None]
    return out


def schedule(L: int) -> List[Tuple[int, int, bool]]:
    """The authors' clip schedule (inference_vis, CLIP_STRIDE 1): (start, frames, is_last)."""
    out = []
    for start in range(0, L):
        end = start + T
        last = end > L
        out.append((start, min(end, L) - start, last))
        if last:
            break
    return out


# ------------------------------------------------------------------------------ the authors' side
def run_authors(A, seq: Sequence, clips: List[Dict[str, np.ndarray]]):
    """Replay the authors' inference_vis post-processing; returns (scores [N,C], masks [N,L,H0,W0] bool,
    reported pairs [(instance, class, score)])."""
    import torch
    mdqe_mod, tracking = A.mdqe, A.tracking
    f, t = preset(seq.preset)
    C = seq.scene.num_classes
    per_image = f.max_queries // 10
    ns = types.SimpleNamespace(apply_cls_thres=f.score_thr, detections_per_image=per_image, num_classes=C,
                               device=torch.device("cpu"))
    (rh, rw), (H0, W0) = seq.geometry.resized, seq.geometry.original
    h, w = seq.geometry.padded[0] // 4, seq.geometry.padded[1] // 4
    window, saved, tracker = 30, 0, None
    cls_clips, mask_clips = [], []
    for (start, n, is_last), out in zip(schedule(seq.frames), clips):
        Q = out["pred_logits"].shape[0]
        output = {"cls": torch.from_numpy(out["pred_logits"]).sigmoid()[None],
                  "mask_coeff": torch.eye(Q)[None],
                  "query_embed": torch.from_numpy(out["pred_queries"])[None]}
        feats = torch.from_numpy(np.ascontiguousarray(out["pred_masks"][:, :n]))      # "mask_feats" [Q,n,h,w]
        res, _ = mdqe_mod.MDQE.inference_clip(ns, output, feats, (h, w))
        clip = tracking.Clips(list(range(start, start + n)), res)
        if tracker is None:
            # their track cap only sizes dense [32, cap, 34, h, w] buffers (beyond it they raise); any cap
            # above the sequence's track count gives the same results, 24 keeps their memory small
            tracker = tracking.OverTracker(24, T, window, 1, C, Q,
                                           out["pred_queries"].shape[1], (h, w), "cpu", f.score_thr)
        tracker.update(clip)
        is_output = start + 1 >= window * (saved + 1)
        if is_last or is_output:
            pred_cls, pred_masks = tracker.get_result(is_last_clip=is_last)
            pred_masks = mdqe_mod.aligned_bilinear(pred_masks, factor=4).sigmoid()[..., :rh, :rw]
            cls_clips.append(pred_cls)
            mask_clips.append(pred_masks)
            saved += 1
        if is_last:
            break
    # inference_video's scores, for every instance (their top-k picks among these)
    N = cls_clips[-1].shape[0]
    stacked = torch.stack([torch.cat([c, torch.zeros(N - c.shape[0], C)]) for c in cls_clips])
    scores = (0.75 * stacked.mean(0) + 0.25 * stacked.max(0)[0]).numpy()
    masks = np.zeros((N, seq.frames, H0, W0), bool)
    for i in range(N):
        mv = torch.cat([m[i] if i < m.shape[0] else torch.zeros_like(m[0]) for m in mask_clips], dim=0)
        mv = mdqe_mod.interpolate(mv.unsqueeze(0), size=(H0, W0), mode="nearest").squeeze(0) > 0.5
        masks[i] = mv.numpy()
    vid = mdqe_mod.MDQE.inference_video(ns, (H0, W0), [c.clone() for c in cls_clips], list(mask_clips))
    return scores, masks, vid


# ------------------------------------------------------------------------------------- our side
def run_ours(seq: Sequence, clips: List[Dict[str, np.ndarray]], **overrides):
    """Our streaming post-processing on the same clip outputs: (scores {tid: [C]}, masks {tid: [L,H0,W0]},
    pairs)."""
    f, t = preset(seq.preset, **overrides)
    C = seq.scene.num_classes
    post = MaskPostprocessor(seq.geometry, 4, t.mask_resize)
    H0, W0 = seq.geometry.original
    tr = ClipTracker(C, t, num_frames=T)
    masks: Dict[int, np.ndarray] = {}
    popped = 0
    sched = schedule(seq.frames)
    if not t.tail_clip and seq.frames >= T and sched[-1][2]:
        sched = sched[:-1]                                      # option: no truncated last clip
        sched[-1] = (sched[-1][0], sched[-1][1], True)
    for (start, n, is_last), out in zip(sched, clips):
        dets = filter_clip(out, n, post.valid_hw(), f, start=start, embedding=t.embedding)
        tr.update(dets)
        last_final = seq.frames - 1 if is_last else start      # frames no later clip covers
        while popped <= last_final:
            for tid, logits in tr.pop_frame(popped):
                if tid not in masks:
                    masks[tid] = np.zeros((seq.frames, H0, W0), bool)
                masks[tid][popped] = post(logits).astype(bool)
            popped += 1
    tr.finish()
    summ = {s.track_id: s.scores for s in tr.summaries()}
    pairs = select_pairs(tr.summaries())
    return summ, masks, pairs


# ---------------------------------------------------------------------------------- comparison
def compare(A, seq: Sequence, **overrides) -> dict:
    clips = [clip_outputs(seq, s, n) for s, n, _ in schedule(seq.frames)]
    a_scores, a_masks, vid = run_authors(A, seq, clips)
    o_scores, o_masks, pairs = run_ours(seq, clips, **overrides)
    N = a_scores.shape[0]
    ids_a, ids_o = set(range(1, N + 1)), set(o_scores)
    px_diff, px_total, frames_diff = 0, 0, 0
    score_diff = 0.0
    for i in range(N):
        tid = i + 1
        am = a_masks[i]
        om = o_masks.get(tid, np.zeros_like(am))
        d = int((am != om).sum())
        px_diff += d
        px_total += int(am.sum())
        frames_diff += int((am != om).any(axis=(1, 2)).sum())
        if tid in o_scores:
            score_diff = max(score_diff, float(np.abs(o_scores[tid] - a_scores[i]).max()))
    extra = sorted(ids_o - ids_a)
    for tid in extra:
        px_diff += int(o_masks.get(tid, np.zeros(1, bool)).sum())
    a_pairs = {(int(l), round(float(s), 5)) for l, s in zip(vid["pred_labels"], vid["pred_scores"])}
    # authors' reported (instance, class): recover the instance from its score row
    a_pairs_id = set()
    for l, s in zip(vid["pred_labels"], vid["pred_scores"]):
        i = int(np.argmin(np.abs(a_scores[:, l] - s)))
        a_pairs_id.add((i + 1, int(l)))
    o_pairs_id = {(tid, c) for tid, c, _ in pairs}
    return {
        "sequence": seq.name, "frames": seq.frames, "clips": len(clips), "preset": seq.preset,
        "overrides": {k: v for k, v in overrides.items()},
        "tracks_authors": N, "tracks_ours": len(ids_o),
        "ids_equal": ids_a == ids_o,
        "mask_pixels_differing": px_diff, "mask_pixels_authors": px_total,
        "track_frames_differing": frames_diff,
        "video_score_max_abs_diff": score_diff,
        "reported_pairs_equal": a_pairs_id == o_pairs_id,
        "reported_pairs": len(a_pairs),
        "identical": ids_a == ids_o and px_diff == 0 and score_diff < 1e-5 and a_pairs_id == o_pairs_id,
    }


def run(authors, args=None) -> dict:
    """Stage entry point (tools/authors_parity.py): every sequence with our defaults (must be
    identical), then the measured effect of the window-collapse option and the paper preset."""
    rows = [compare(authors, s) for s in sequences()]
    variants = []
    for s in sequences()[:3]:
        variants.append(compare(authors, s, collapse_windows=False))
        variants.append(compare(authors, s, tail_clip=False))
    variants.append(compare(authors, sequences()[0], **dict(zip(
        ("collapse_windows", "tail_clip", "short_unseen", "memory_clips", "first_clip_all"),
        (False, False, 0, 10, False)))))
    return {"ok": all(r["identical"] for r in rows), "defaults": rows, "options": variants}


def table(res: dict) -> str:
    lines = ["| sequence | clips | tracks (authors / ours) | ids equal | mask px differing (of authors') "
             "| track-frames differing | max video-score diff | reported pairs equal |",
             "|---|---|---|---|---|---|---|---|"]
    for r in res["defaults"] + res["options"]:
        name = r["sequence"] + (f" [{', '.join(f'{k}={v}' for k, v in r['overrides'].items())}]" if r["overrides"] else "")
        lines.append(f"| {name} | {r['clips']} | {r['tracks_authors']} / {r['tracks_ours']} | {r['ids_equal']} | "
                     f"{r['mask_pixels_differing']} ({r['mask_pixels_authors']}) | {r['track_frames_differing']} | "
                     f"{r['video_score_max_abs_diff']:.2e} | {r['reported_pairs_equal']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    """``python -m tools.parity.tracker ...`` = ``python -m tools.authors_parity --stages tracker ...``."""
    from tools.authors_parity import main as harness
    return harness(["--stages", "tracker", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
