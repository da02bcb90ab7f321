"""Training losses of MDQE (paper Secs. 3.2-3.4; by default as the authors' code computes them)."""
from .box_ops import (cxcywh_to_xyxy, generalized_box_iou_elementwise, generalized_box_iou_pairwise, matched_giou,
                      video_box_iou, video_giou_matrix, xyxy_to_cxcywh)
from .criterion import STYLES, SetCriterion
from .focal import focal_class_cost, sigmoid_focal_loss
from .init_losses import (grid_offsets, init_reid_loss, init_reid_sampled_loss, init_sem_loss, init_sem_peak_loss,
                          point_owners, query_instance_ids, reid_candidates, semantic_targets)
from .mask import (bce_loss, dice_loss, downsample_masks, inter_bce_loss, inter_dice_loss, inter_instance_masks,
                   neighbour_matrix, neighbour_union_masks, repulsion_weights, union_bce_loss, union_dice_loss)
from .targets import box_valid, instance_ids_per_frame, peak_targets, prepare_target, reference_points, soft_mask_targets

__all__ = [
    "SetCriterion", "STYLES", "sigmoid_focal_loss", "focal_class_cost", "cxcywh_to_xyxy", "xyxy_to_cxcywh",
    "generalized_box_iou_pairwise", "generalized_box_iou_elementwise", "video_box_iou", "video_giou_matrix",
    "matched_giou", "downsample_masks", "neighbour_matrix", "inter_instance_masks", "repulsion_weights",
    "inter_bce_loss", "inter_dice_loss", "bce_loss", "dice_loss", "neighbour_union_masks", "union_bce_loss",
    "union_dice_loss", "semantic_targets", "init_sem_loss", "point_owners", "init_reid_loss", "init_sem_peak_loss",
    "query_instance_ids", "grid_offsets", "reid_candidates", "init_reid_sampled_loss", "soft_mask_targets",
    "prepare_target", "box_valid", "instance_ids_per_frame", "reference_points", "peak_targets",
]
