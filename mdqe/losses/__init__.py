"""Training losses of MDQE (paper Secs. 3.2-3.4)."""
from .box_ops import cxcywh_to_xyxy, generalized_box_iou_elementwise, generalized_box_iou_pairwise, xyxy_to_cxcywh
from .criterion import SetCriterion
from .focal import focal_class_cost, sigmoid_focal_loss
from .init_losses import init_reid_loss, init_sem_loss, point_owners, semantic_targets
from .mask import (bce_loss, dice_loss, downsample_masks, inter_bce_loss, inter_dice_loss, inter_instance_masks,
                   neighbour_matrix, repulsion_weights)

__all__ = [
    "SetCriterion", "sigmoid_focal_loss", "focal_class_cost", "cxcywh_to_xyxy", "xyxy_to_cxcywh",
    "generalized_box_iou_pairwise", "generalized_box_iou_elementwise", "downsample_masks", "neighbour_matrix",
    "inter_instance_masks", "repulsion_weights", "inter_bce_loss", "inter_dice_loss", "bce_loss", "dice_loss",
    "semantic_targets", "init_sem_loss", "point_owners", "init_reid_loss",
]
