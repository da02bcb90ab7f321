"""Torch-free YouTube-VIS / OVIS evaluation (numpy + pycocotools only).

    from mdqe.evaluation import evaluate
    metrics = evaluate("annotations/val.json", "results.json")  # {"AP": ..., "AP50": ..., ...}

See ytvis_eval.py for the exact semantics and docs/data_eval.md for usage.
"""
from .io import (OCCLUSION_SCORES, Detection, GroundTruth, GTInstance, GTVideo, load_ground_truth,
                 load_results, occlusion_score)
from .results import make_result, save_results, write_json_atomic
from .rle import FormatError
from .video_iou import video_intersection_union, video_iou, video_iou_dense
from .ytvis_eval import AREA_RANGES, OCCLUSION_RANGES, EvalParams, EvalResult, evaluate, evaluate_detailed

__all__ = [
    "evaluate", "evaluate_detailed", "EvalParams", "EvalResult", "FormatError", "load_ground_truth",
    "load_results", "video_iou", "video_intersection_union", "video_iou_dense",
    "occlusion_score", "AREA_RANGES", "OCCLUSION_RANGES", "OCCLUSION_SCORES", "GroundTruth",
    "GTInstance", "GTVideo", "Detection", "make_result", "save_results", "write_json_atomic",
]
