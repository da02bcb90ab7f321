"""Evaluator tests on hand-made ground truth and results with known AP.

Every expected value is derived by hand in the comments. Recall thresholds
are r = 0.00, 0.01, ..., 1.00 (101 points); IoU thresholds 0.50, 0.55, ..., 0.95.
"""
import numpy as np
import pytest

from runtime.rle import encode_rle
from mdqe.evaluation import evaluate, evaluate_detailed, occlusion_score, video_iou, video_iou_dense
from mdqe.evaluation.io import load_ground_truth

H, W = 40, 60


def box_mask(x0, y0, x1, y1, h=H, w=W):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def enc(track):
    """list of [H,W] bool or None -> list of RLE or None (None and empty masks -> None)."""
    return [encode_rle(m) if m is not None and m.any() else None for m in track]


def make_gt(videos, anns, cats=(1,), h=H, w=W, occlusion=None):
    """videos: {vid: length}; anns: list of (vid, cat, track[, iscrowd])."""
    gt = {"videos": [{"id": v, "height": h, "width": w, "length": n,
                      "file_names": [f"v{v}/{t:05d}.jpg" for t in range(n)]} for v, n in videos.items()],
          "categories": [{"id": c, "name": f"c{c}"} for c in cats], "annotations": []}
    for i, a in enumerate(anns):
        vid, cat, track = a[:3]
        segs = enc(track)
        ann = {"id": i + 1, "video_id": vid, "category_id": cat, "iscrowd": int(a[3]) if len(a) > 3 else 0,
               "segmentations": segs,
               "areas": [float(m.sum()) if s is not None else None for m, s in zip(track, segs)],
               "bboxes": [None] * len(track)}
        if occlusion is not None:
            ann["occlusion"] = occlusion[i]
        gt["annotations"].append(ann)
    return gt


def det(vid, cat, score, track):
    return {"video_id": vid, "category_id": cat, "score": score, "segmentations": enc(track)}


def test_perfect_predictions_give_ap_one():
    a = [box_mask(0, 0, 10, 10), box_mask(2, 2, 12, 12), None]
    b = [None, box_mask(30, 20, 50, 35), box_mask(31, 20, 51, 35)]
    gt = make_gt({1: 3, 2: 3}, [(1, 1, a), (1, 2, b), (2, 1, b)], cats=(1, 2))
    res = [det(1, 1, 0.9, a), det(1, 2, 0.8, b), det(2, 1, 0.7, b)]
    m = evaluate(gt, res)
    for k in ("AP", "AP50", "AP75", "AR1", "AR10", "AR100", "APs"):
        assert m[k] == pytest.approx(1.0), k
    # no medium/large objects -> undefined
    assert m["APm"] == -1 and m["APl"] == -1
    assert "AP_so" not in m  # no occlusion labels in this ground truth


def test_single_prediction_iou_062_counts_three_thresholds():
    # GT 10x10 = 100 px on frame 0; the detection covers 62 of them (a subset):
    # IoU = 62 / 100 = 0.62 -> a match at 0.50, 0.55, 0.60, none at 0.65..0.95.
    # Each matched threshold has precision 1 at every recall point -> AP = 3/10.
    g = box_mask(0, 0, 10, 10)
    d = g.copy()
    d.flat[np.flatnonzero(g)[62:]] = False
    assert d.sum() == 62
    gt = make_gt({1: 1}, [(1, 1, [g])])
    m = evaluate(gt, [det(1, 1, 0.5, [d])])
    assert m["AP"] == pytest.approx(0.3)
    assert m["AP50"] == pytest.approx(1.0) and m["AP75"] == 0.0
    assert m["AR1"] == pytest.approx(0.3)  # recall 1 at 3 of 10 thresholds


def test_multiframe_empty_frames_and_prediction_without_gt():
    # 4 frames. GT: 50 px on frames 0 and 1, nothing on 2 and 3.
    # Detection: identical on frames 0,1 (intersection 100), an extra 30 px mask
    # on frame 2 where there is no GT (adds 30 to the union), nothing on frame 3.
    # Video IoU = 100 / (100 + 30) = 0.769 -> matched at 0.50..0.75 (6 of 10) -> AP 0.6.
    g0, g1 = box_mask(0, 0, 10, 5), box_mask(5, 5, 15, 10)
    extra = box_mask(40, 30, 46, 35)
    assert g0.sum() == g1.sum() == 50 and extra.sum() == 30
    gt = make_gt({1: 4}, [(1, 1, [g0, g1, None, None])])
    d = [g0, g1, extra, None]
    assert video_iou([enc(d)], [enc([g0, g1, None, None])])[0, 0] == pytest.approx(100 / 130)
    m = evaluate(gt, [det(1, 1, 0.9, d)])
    assert m["AP"] == pytest.approx(0.6)
    # A GT frame that the detection misses also only adds to the union:
    # det only on frame 0 -> IoU = 50 / 100 = 0.5 -> matched at 0.50 only -> AP 0.1.
    m2 = evaluate(gt, [det(1, 1, 0.9, [g0, None, None, None])])
    assert m2["AP"] == pytest.approx(0.1)


def test_precision_interpolation():
    # 3 GTs in one video; 5 detections by decreasing score: TP, FP, FP, TP, TP
    # (TPs identical to a GT, FPs disjoint from all GTs), at every IoU threshold.
    # precision: 1, 1/2, 1/3, 2/4, 3/5   recall: 1/3, 1/3, 1/3, 2/3, 1
    # interpolated (max to the right): 1, .6, .6, .6, .6
    # r in [0, 0.33] (34 points) -> 1; r in [0.34, 0.66] (33) -> .6; r in [0.67, 1] (34) -> .6
    # AP = (34 * 1 + 67 * 0.6) / 101 = 74.2 / 101 (without interpolation it would be 70.9 / 101)
    gts = [box_mask(0, 0, 8, 8), box_mask(10, 0, 18, 8), box_mask(20, 0, 28, 8)]
    fps = [box_mask(0, 20, 8, 28), box_mask(10, 20, 18, 28)]
    gt = make_gt({1: 1}, [(1, 1, [g]) for g in gts])
    res = [det(1, 1, 0.9, [gts[0]]), det(1, 1, 0.8, [fps[0]]), det(1, 1, 0.7, [fps[1]]),
           det(1, 1, 0.6, [gts[1]]), det(1, 1, 0.5, [gts[2]])]
    m = evaluate(gt, res)
    assert m["AP"] == pytest.approx(74.2 / 101)
    # maxDets 1 per video: only the top detection (a TP) -> recall 1/3
    assert m["AR1"] == pytest.approx(1 / 3)
    assert m["AR10"] == pytest.approx(1.0)


def test_ar1_vs_ar10_and_max_dets_per_video():
    # Video 1 has 2 GTs, video 2 has 1 GT; all detections perfect.
    # AR1: one detection per video -> 2 of 3 GTs recalled -> 2/3; AR10 -> 1.
    a, b = box_mask(0, 0, 10, 10), box_mask(20, 0, 30, 10)
    gt = make_gt({1: 1, 2: 1}, [(1, 1, [a]), (1, 1, [b]), (2, 1, [a])])
    res = [det(1, 1, 0.9, [a]), det(1, 1, 0.8, [b]), det(2, 1, 0.3, [a])]
    m = evaluate(gt, res)
    assert m["AR1"] == pytest.approx(2 / 3)
    assert m["AR10"] == pytest.approx(1.0) and m["AR100"] == pytest.approx(1.0)
    assert m["AP"] == pytest.approx(1.0)


def test_greedy_matching_prefers_higher_score_and_best_iou():
    # One GT; two detections: the higher-scored one has IoU 0.62, the lower one IoU 1.
    # The higher-scored detection takes the GT at thresholds 0.50..0.60; there the
    # second one is a FP after the TP (precision 1 up to recall 1 -> AP 1 per threshold).
    # At 0.65..0.95 the first is a FP and the second a TP: precision 1/2 at recall 1
    # -> 0.5 per threshold. AP = (3 * 1 + 7 * 0.5) / 10 = 0.65.
    g = box_mask(0, 0, 10, 10)
    d = g.copy()
    d.flat[np.flatnonzero(g)[62:]] = False
    gt = make_gt({1: 1}, [(1, 1, [g])])
    m = evaluate(gt, [det(1, 1, 0.9, [d]), det(1, 1, 0.8, [g])])
    assert m["AP"] == pytest.approx(0.65)


def test_crowd_ground_truth_is_ignored():
    # Regular GT a, crowd GT c. Detection on c (score .9) is matched to an ignored
    # GT -> ignored; detection on a -> TP. One positive -> AP 1.
    a, c = box_mask(0, 0, 10, 10), box_mask(30, 10, 50, 30)
    gt = make_gt({1: 1}, [(1, 1, [a]), (1, 1, [c], True)])
    m = evaluate(gt, [det(1, 1, 0.9, [c]), det(1, 1, 0.5, [a])])
    assert m["AP"] == pytest.approx(1.0)
    # Same data without the crowd flag: 2 positives, both found -> AP 1 and AR1 1/2.
    gt2 = make_gt({1: 1}, [(1, 1, [a]), (1, 1, [c])])
    assert evaluate(gt2, [det(1, 1, 0.9, [c]), det(1, 1, 0.5, [a])])["AR1"] == pytest.approx(0.5)


def test_category_without_gt_is_minus_one_and_excluded_from_mean():
    # Category 2 has no GT: its detections cannot lower AP (precision -1, excluded).
    a = box_mask(0, 0, 10, 10)
    gt = make_gt({1: 1}, [(1, 1, [a])], cats=(1, 2))
    r = evaluate_detailed(gt, [det(1, 1, 0.9, [a]), det(1, 2, 0.95, [a])])
    assert r.summary()["AP"] == pytest.approx(1.0)
    assert r.per_category_ap() == {"c1": pytest.approx(1.0), "c2": -1.0}
    # A wrong-category detection of a category with GT is a FP in that category:
    gt3 = make_gt({1: 1}, [(1, 1, [a]), (1, 2, [box_mask(30, 0, 40, 10)])], cats=(1, 2))
    r3 = evaluate_detailed(gt3, [det(1, 2, 0.95, [a]), det(1, 1, 0.9, [a])])
    # cat 1: AP 1; cat 2: one FP, GT missed -> AP 0. Mean = 0.5.
    assert r3.summary()["AP"] == pytest.approx(0.5)


def test_area_ranges_use_mean_over_nonempty_frames():
    # Frame 256x256. GT present on 2 of 4 frames with areas 100^2 and 200^2:
    # mean over non-empty frames = 25000 -> medium (128^2=16384 .. 256^2=65536).
    # (Over all 4 frames it would be 12500 -> small.)
    h = w = 256
    f0, f1 = box_mask(0, 0, 100, 100, h, w), box_mask(0, 0, 200, 200, h, w)
    track = [f0, None, f1, None]
    gt = make_gt({1: 4}, [(1, 1, track)], h=h, w=w)
    m = evaluate(gt, [det(1, 1, 0.9, track)])
    assert m["APm"] == pytest.approx(1.0)
    assert m["APs"] == -1 and m["APl"] == -1
    # A small unmatched detection is ignored in the medium range but a FP in "all":
    small = [box_mask(210, 210, 220, 220, h, w)] + [None] * 3
    m2 = evaluate(gt, [det(1, 1, 0.95, small), det(1, 1, 0.9, track)])
    assert m2["APm"] == pytest.approx(1.0)
    assert m2["AP"] == pytest.approx(0.5)  # FP then TP: precision 1/2 at recall 1


def test_occlusion_score_definition():
    assert occlusion_score([0.0, 0.0, 0.25, None]) == pytest.approx(0.125)   # top 2 of 3: 0, .25
    assert occlusion_score([0.25, 0.25, 0.75, 0.0]) == pytest.approx(0.5)    # top 2 of 4: .25, .75
    assert occlusion_score([0.75]) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        occlusion_score([None, None])


@pytest.mark.parametrize("as_strings", [False, True])
def test_occlusion_bins(as_strings):
    # g1 occ [0, 0, .25, -] -> score .125 -> slight only
    # g2 occ [.25, .25, .75, 0] -> score .5 -> moderate AND heavy (closed bins)
    # g3 occ [-, -, .75, .75] -> score .75 -> heavy only
    # Detections: perfect on g1 (score .9) and on g3 (score .8); g2 missed.
    # AP_so: positive {g1}; det3 matches ignored g3 -> ignored; TP -> AP 1
    # AP_mo: positive {g2}; both dets matched to ignored GTs -> no TP -> AP 0
    # AP_ho: positives {g2, g3}; det1 ignored, det3 TP -> recall 1/2 at precision 1 -> 51/101
    # AP (all): 3 positives, 2 TPs at precision 1 -> recall 2/3 -> r <= 0.66: 67/101
    names = {0.0: "no_occlusion", 0.25: "slight_occlusion", 0.75: "severe_occlusion", None: None}
    g1 = [box_mask(0, 0, 8, 8)] * 3 + [None]
    g2 = [box_mask(20, 0, 28, 8)] * 4
    g3 = [None, None] + [box_mask(40, 0, 48, 8)] * 2
    occ = [[0.0, 0.0, 0.25, None], [0.25, 0.25, 0.75, 0.0], [None, None, 0.75, 0.75]]
    if as_strings:
        occ = [[names[x] for x in o] for o in occ]
    gt = make_gt({1: 4}, [(1, 1, g1), (1, 1, g2), (1, 1, g3)], occlusion=occ)
    m = evaluate(gt, [det(1, 1, 0.9, g1), det(1, 1, 0.8, g3)])
    assert m["AP_so"] == pytest.approx(1.0)
    assert m["AP_mo"] == pytest.approx(0.0)
    assert m["AP_ho"] == pytest.approx(51 / 101)
    assert m["AP"] == pytest.approx(67 / 101)
    assert m["AR_ho"] == pytest.approx(0.5)


def test_video_iou_matches_dense_numpy_on_random_masks():
    rng = np.random.default_rng(0)
    n, h, w = 5, 23, 31
    def rand_track():
        masks = rng.random((n, h, w)) < rng.uniform(0.05, 0.5)
        masks[rng.random(n) < 0.3] = False  # some empty frames
        return masks
    dets = [rand_track() for _ in range(4)]
    gts = [rand_track() for _ in range(3)]
    got = video_iou([enc(list(d)) for d in dets], [enc(list(g)) for g in gts])
    want = np.array([[video_iou_dense(d, g) for g in gts] for d in dets])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_ties_keep_file_order_and_polygon_gt():
    # GT given as a polygon (a 10x10 square) must decode like the RLE of the same square.
    gt = make_gt({1: 1}, [(1, 1, [box_mask(0, 0, 10, 10)])])
    gt["annotations"][0]["segmentations"] = [[[0, 0, 10, 0, 10, 10, 0, 10]]]
    g = load_ground_truth(gt)
    from pycocotools import mask as mu
    assert int(mu.area(g.instances[0].masks[0])) == 100
    # Two detections with equal scores: the first in file order is ranked first.
    # First one a FP, second a TP -> precision 1/2 at recall 1 -> AP 0.5; reversed -> AP 1.
    fp = det(1, 1, 0.5, [box_mask(30, 20, 40, 30)])
    tp = det(1, 1, 0.5, [box_mask(0, 0, 10, 10)])
    assert evaluate(gt, [fp, tp])["AP"] == pytest.approx(0.5)
    assert evaluate(gt, [tp, fp])["AP"] == pytest.approx(1.0)


def test_single_frame_videos_agree_with_pycocotools_cocoeval(capsys):
    # With one frame per video the video IoU is the image mask IoU, so the official
    # COCO evaluator (pycocotools.cocoeval, area ranges set to the VIS 128^2 / 256^2)
    # must give exactly the same 12 numbers on random data with jittered detections,
    # wrong-category detections, false positives and score ties.
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    rng = np.random.default_rng(7)
    h, w = 400, 520
    vis_gt = {"videos": [], "annotations": [], "categories": [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)]}
    coco_gt = {"images": [], "annotations": [], "categories": vis_gt["categories"]}
    vis_res, coco_res = [], []
    for v in range(1, 21):
        vis_gt["videos"].append({"id": v, "height": h, "width": w, "length": 1})
        coco_gt["images"].append({"id": v, "height": h, "width": w, "file_name": f"{v}.jpg"})
        for _ in range(int(rng.integers(0, 5))):
            bw, bh = int(rng.integers(8, 500)), int(rng.integers(8, 380))
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            m = box_mask(x, y, x + bw, y + bh, h, w)
            cat = int(rng.integers(1, 4))
            rle = encode_rle(m)
            aid = len(coco_gt["annotations"]) + 1
            vis_gt["annotations"].append({"id": aid, "video_id": v, "category_id": cat, "iscrowd": 0,
                                          "segmentations": [rle], "areas": [float(m.sum())]})
            coco_gt["annotations"].append({"id": aid, "image_id": v, "category_id": cat, "iscrowd": 0,
                                           "segmentation": rle, "area": float(m.sum()), "bbox": [x, y, bw, bh]})
            for _ in range(int(rng.integers(0, 3))):  # jittered detections, sometimes of another class
                dx, dy = (int(t) for t in rng.integers(-bw // 6 - 1, bw // 6 + 2, 2))
                dm = box_mask(max(0, x + dx), max(0, y + dy), min(w, x + dx + bw), min(h, y + dy + bh), h, w)
                dcat = cat if rng.random() < 0.8 else int(rng.integers(1, 4))
                score = float(np.round(rng.random(), 1))  # coarse scores -> ties
                vis_res.append({"video_id": v, "category_id": dcat, "score": score, "segmentations": [encode_rle(dm)]})
                coco_res.append({"image_id": v, "category_id": dcat, "score": score, "segmentation": encode_rle(dm)})
        for _ in range(int(rng.integers(0, 3))):  # false positives
            x, y = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
            fm = box_mask(x, y, x + 20, y + 20, h, w)
            cat, score = int(rng.integers(1, 4)), float(rng.random())
            vis_res.append({"video_id": v, "category_id": cat, "score": score, "segmentations": [encode_rle(fm)]})
            coco_res.append({"image_id": v, "category_id": cat, "score": score, "segmentation": encode_rle(fm)})
    coco = COCO()
    coco.dataset = coco_gt
    coco.createIndex()
    ev = COCOeval(coco, coco.loadRes(coco_res), "segm")
    ev.params.areaRng = [[0, 1e5 ** 2], [0, 128 ** 2], [128 ** 2, 256 ** 2], [256 ** 2, 1e5 ** 2]]
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    capsys.readouterr()
    ours = evaluate(vis_gt, vis_res)
    keys = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    np.testing.assert_allclose([ours[k] for k in keys], ev.stats, rtol=0, atol=1e-12)
    assert 0.1 < ours["AP"] < 0.9 and all(ours[k] >= 0 for k in keys)  # non-trivial, all ranges used


def test_metrics_invariant_to_result_order_and_monotone_score_maps():
    # Random multi-frame videos with distinct scores: shuffling the results list or
    # applying a strictly increasing map to the scores must not change any metric.
    rng = np.random.default_rng(3)
    anns, res = [], []
    for v in (1, 2, 3):
        for _ in range(3):
            x, y = (int(t) for t in rng.integers(0, 40, 2))
            track = [box_mask(x + t, y, x + t + 12, y + 10) if rng.random() < 0.8 else None for t in range(5)]
            cat = int(rng.integers(1, 3))
            anns.append((v, cat, track))
            jit = [None if m is None or rng.random() < 0.2 else np.roll(m, int(rng.integers(-3, 4)), axis=1)
                   for m in track]
            res.append(det(v, cat, 0, jit))
        res.append(det(v, int(rng.integers(1, 3)), 0, [box_mask(0, 30, 8, 38)] * 5))
    for r, s in zip(res, rng.permutation(len(res))):
        r["score"] = 0.05 + 0.9 * s / len(res)
    gt = make_gt({1: 5, 2: 5, 3: 5}, anns, cats=(1, 2))
    base = evaluate(gt, res)
    assert 0 < base["AP"] < 1
    shuffled = [res[i] for i in rng.permutation(len(res))]
    assert evaluate(gt, shuffled) == pytest.approx(base)
    squashed = [dict(r, score=r["score"] ** 3) for r in res]
    assert evaluate(gt, squashed) == pytest.approx(base)
