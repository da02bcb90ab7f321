"""Losses of the query initialisation (paper Sec. 3.2).

* init-sem: sigmoid focal loss on the class-aware activation map S against
  per-pixel class maps built from the GT masks at the map's resolution.
* init-reid: contrastive loss on the embeddings of the selected frame-level
  queries; a query's identity is the GT instance under its peak point.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .focal import sigmoid_focal_loss
from .mask import downsample_masks


def semantic_targets(masks: torch.Tensor, labels: torch.Tensor, num_classes: int, size) -> torch.Tensor:
    """Per-pixel, per-class targets for the activation map.

    masks [K,T,H,W] bool, labels [K] (0-based) -> float {0,1} [T,C,h,w]: pixel
    (t, c, y, x) is 1 when an instance of class c covers at least half of that
    low-resolution pixel in frame t.
    """
    K, T = masks.shape[:2]
    h, w = int(size[0]), int(size[1])
    out = masks.new_zeros(T, num_classes, h, w, dtype=torch.float32)
    if K == 0:
        return out
    down = downsample_masks(masks, (h, w))  # [K,T,h,w]
    for k in range(K):
        c = int(labels[k])
        if not 0 <= c < num_classes:
            raise ValueError(f"label {c} outside [0, {num_classes})")
        out[:, c] = torch.maximum(out[:, c], down[k])
    return out


def init_sem_loss(sem_logits: torch.Tensor, sem_targets: torch.Tensor, alpha: float = 0.25,
                  gamma: float = 2.0) -> torch.Tensor:
    """Focal loss summed over all map entries / max(1, number of positive entries).

    sem_logits, sem_targets: [..., C, h, w] (e.g. [B,T,C,h,w]) -> scalar.
    """
    loss = sigmoid_focal_loss(sem_logits, sem_targets, alpha, gamma)
    return loss.sum() / sem_targets.sum().clamp(min=1.0)


def point_owners(points: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Which GT instance lies under each query point.

    points [T,Q,2] (x, y) normalised to the padded image, masks [K,T,H,W]
    bool -> [T,Q] int64 instance index, -1 on background. Where masks
    overlap the highest index wins (deterministic).
    """
    T, Q = points.shape[:2]
    K, _, H, W = masks.shape
    if K == 0:
        return torch.full((T, Q), -1, dtype=torch.long, device=points.device)
    px = (points[..., 0].detach() * W).long().clamp(0, W - 1)  # [T,Q]
    py = (points[..., 1].detach() * H).long().clamp(0, H - 1)
    t_idx = torch.arange(T, device=points.device)[:, None].expand(T, Q)
    hit = masks[:, t_idx, py, px]  # [K,T,Q]
    rank = hit.long() * torch.arange(1, K + 1, device=points.device)[:, None, None]
    return rank.max(0).values - 1


def init_reid_loss(embeds: torch.Tensor, owners: torch.Tensor):
    """Contrastive loss of the paper's Sec. 3.2 for one clip.

    embeds [T,Q,E], owners [T,Q] (instance index or -1). Each query lying on
    an instance is an anchor; every query of another frame on the same
    instance is a positive, every query of another frame not on it
    (other instances and background) is a negative. Per (anchor, positive)
    pair: ``-log(exp(s+) / (exp(s+) + sum exp(s-)))`` with dot-product
    similarities. Returns ``(sum over pairs, number of pairs)`` so callers can
    average over a batch.
    """
    T, Q, E = embeds.shape
    e = embeds.reshape(T * Q, E)
    own = owners.reshape(T * Q)
    frame = torch.arange(T, device=e.device).repeat_interleave(Q)
    other_frame = frame[:, None] != frame[None, :]
    anchor = own >= 0
    pos = other_frame & (own[:, None] == own[None, :]) & anchor[:, None]
    if not bool(pos.any()):
        return e.sum() * 0.0, 0
    neg = other_frame & (own[:, None] != own[None, :]) & anchor[:, None]
    sim = e @ e.t()  # [TQ,TQ]
    # A large finite fill (not -inf) keeps the gradient finite for anchors
    # without negatives; their pair loss is then softplus(-1e9 - s) = 0.
    neg_lse = torch.logsumexp(sim.masked_fill(~neg, -1e9), dim=1)
    a_idx, p_idx = pos.nonzero(as_tuple=True)
    pair = F.softplus(neg_lse[a_idx] - sim[a_idx, p_idx])
    return pair.sum(), int(a_idx.numel())


# ---- the authors' form (default criterion) --------------------------------------------------------
SEM_NUM_POINTS = 12544   # most uncertain map pixels per frame that enter the init-sem loss
REID_MAX_NEG_PER_FRAME = 50
REID_POS_PER_NEG = 5     # positives: max(2, int(negatives / 5))
REID_EXP_SUM_MAX = 1e3


def init_sem_peak_loss(sem_logits: torch.Tensor, labels: torch.Tensor, dist: torch.Tensor,
                       num_points: int = SEM_NUM_POINTS) -> torch.Tensor:
    """Init-sem loss with the peak targets (:func:`mdqe.losses.targets.peak_targets`), as the authors compute it.

    sem_logits [B,T,C,H,W]; labels [B,T,H*W] (class, -1 background); dist
    [B,T,H*W,C] distance weights. Per frame: one-hot targets y; uncertainty
    ``sum_c C*(1-p)*y + p*(1-y)``; the ``min(H*W, num_points)`` most
    uncertain pixels; loss ``BCE * |y - p|**2 * (d*y + (1-d)*(1-y))**2``
    summed over those pixels and the classes, divided by the frame's number
    of positive pixels among them (at least 1); mean over the B*T frames.
    """
    B, T, C, H, W = sem_logits.shape
    x = sem_logits.permute(0, 1, 3, 4, 2).reshape(B * T, H * W, C)
    lab = labels.reshape(B * T, H * W).to(x.device)
    with torch.no_grad():
        onehot = torch.zeros_like(x)
        pos = lab >= 0
        onehot[pos.nonzero(as_tuple=True) + (lab[pos],)] = 1.0
    d = dist.reshape(B * T, H * W, C).to(x)
    p_unc = x.detach().float().sigmoid()
    uncertainty = (C * (1 - p_unc) * onehot + p_unc * (1 - onehot)).sum(dim=-1)  # [BT,HW]
    with torch.no_grad():
        idx = torch.topk(uncertainty, k=min(H * W, num_points), dim=1)[1]
        y = torch.gather(onehot, 1, idx[..., None].expand(-1, -1, C))
        dw = torch.gather(d, 1, idx[..., None].expand(-1, -1, C))
    xs = torch.gather(x, 1, idx[..., None].expand(-1, -1, C)).float()
    n_pos = y.any(dim=-1).sum(dim=1).clamp(min=1)
    prob = xs.sigmoid()
    ce = F.binary_cross_entropy_with_logits(xs, y, reduction="none")
    p_t = (1 - prob) * y + prob * (1 - y)
    loss = ce * (p_t ** 2)
    loss = loss * ((dw * y + (1 - dw) * (1 - y)) ** 2)
    return (loss.sum(dim=(-2, -1)) / n_pos).mean()


def query_instance_ids(id_map: torch.Tensor, points: torch.Tensor, size) -> torch.Tensor:
    """The instance id under each selected query point: nearest sampling of the peak-target id map.

    id_map [T,H*W] int64 (-1 background), points [T,Q,2] (x, y) normalised ->
    [T,Q] int64. Sampling as ``grid_sample(mode='nearest',
    padding_mode='border', align_corners=False)`` (the authors' model does
    exactly this).
    """
    H, W = int(size[0]), int(size[1])
    T, Q = points.shape[:2]
    grid = (2 * points.detach().float() - 1).reshape(T, 1, Q, 2)
    ids = F.grid_sample(id_map.reshape(T, 1, H, W).float(), grid, mode="nearest", padding_mode="border",
                        align_corners=False)
    return ids.reshape(T, Q).long()


def grid_offsets(grid_size: int, device=None) -> torch.Tensor:
    """|column offset|, |row offset| between every pair of query grid cells: int64 [Q,Q,2], Q = grid_size**2."""
    r, c = torch.meshgrid(torch.arange(grid_size, device=device), torch.arange(grid_size, device=device),
                          indexing="ij")
    cells = torch.stack([c, r], dim=-1).reshape(-1, 2)
    return (cells[:, None] - cells[None]).abs()


def reid_candidates(ids: torch.Tensor, anchor: int, T: int, offsets: torch.Tensor, window: int) -> torch.Tensor:
    """The candidate queries of one init-reid anchor.

    ids [T*Q] (frame-major instance ids), anchor: flat index of the anchor,
    offsets [Q,Q,2] (:func:`grid_offsets`), window: the association window.
    Returns a bool mask [T*Q]: in frame t the queries within ``max(window, 2) *
    (|t - t_anchor| + 1)`` grid cells (column and row) of the anchor's cell; or,
    when all of those carry the anchor's id, an int64 tensor of T*Q ones (the
    authors' code then indexes with it: T*Q copies of query 1 of frame 0).
    """
    Q = offsets.shape[0]
    frame, cell = anchor // Q, anchor % Q
    w = max(int(window), 2)
    limit = w * ((torch.arange(T, device=offsets.device) - frame).abs() + 1)  # [T]
    fired = (offsets[:, cell][None] <= limit[:, None, None]).all(dim=-1).reshape(T * Q)
    if bool((ids[fired] == ids[anchor]).all()):
        return torch.ones_like(ids)
    return fired


def init_reid_sampled_loss(embeds: torch.Tensor, inst_ids: torch.Tensor, window: int, grid_size: int,
                           generator: torch.Generator | None = None):
    """Init-reid loss of the authors' code: sampled contrast plus the auxiliary cosine-MSE term.

    embeds [B,T,Q,E] (phi_e of the selected queries, before association),
    inst_ids [B,T,Q] (-1 background). For every clip, for every instance
    (ascending id) the anchor is its first query (frame-major); the
    candidates are the queries of frame t within ``max(window, 2) *
    (|t - t_anchor| + 1)`` grid cells (column and row) of the anchor's cell.
    Negatives: ``min(#other, 50*T)`` candidates of other ids, positives
    ``max(2, int(#neg / 5))`` candidates of the same id (the anchor itself may
    be one), each drawn with ``torch.randperm`` from ``generator`` (None:
    torch's default generator) in this order: positives, negatives, then a
    permutation of the auxiliary pairs. Contrast: ``mean over positives of
    log(1 + min(1e3, sum over negatives exp(s- - s+)))`` with dot-product
    similarities; auxiliary: mean of ``(cos(anchor, x) - [x positive])**2``.
    Quirk kept from the authors' code: when every candidate carries the
    anchor's id, the candidates become T*Q copies of query 1 of frame 0.
    Returns ``(contrast, auxiliary)``, each the mean over all instances of
    the batch (0 without instances).
    """
    B, T, Q, E = embeds.shape
    rel = grid_offsets(grid_size, device=inst_ids.device)
    ctt, aux = [], []
    for b in range(B):
        e = embeds[b].reshape(T * Q, E)
        ids = inst_ids[b].reshape(T * Q)
        for u in ids[ids >= 0].unique():
            a = int(torch.nonzero(ids == u)[0, 0])
            fired = reid_candidates(ids, a, T, rel, window)
            cand_ids, cand_e = ids[fired], e[fired]
            anchor = e[a]
            same, diff = cand_ids == u, cand_ids != u
            same_e, diff_e = cand_e[same], cand_e[diff]
            n_neg = min(int(diff.sum()), REID_MAX_NEG_PER_FRAME * T)
            n_pos = max(int(n_neg / REID_POS_PER_NEG), 2)
            pi = torch.randperm(int(same.sum()), generator=generator)[:n_pos]
            pos_e = same_e[pi]
            s_pos = torch.einsum("ke,e->k", pos_e, anchor)
            ni = torch.randperm(int(diff.sum()), generator=generator)[:n_neg]
            neg_e = diff_e[ni]
            s_neg = torch.einsum("qe,e->q", neg_e, anchor)
            gap = s_neg[:, None] - s_pos[None]
            ctt.append(torch.log(1 + gap.exp().sum(dim=0).clamp(max=REID_EXP_SUM_MAX)).mean().reshape(-1))
            lab = torch.cat([s_pos.new_ones(len(pi)), s_neg.new_zeros(len(ni))])
            cand = torch.cat([pos_e, neg_e])
            perm = torch.randperm(cand.shape[0], generator=generator)
            cos = torch.einsum("e,ke->k", F.normalize(anchor, dim=-1), F.normalize(cand, dim=-1))
            aux.append((torch.abs(cos[perm] - lab[perm]) ** 2).mean().reshape(-1))
    if not ctt:
        zero = embeds.sum() * 0.0
        return zero, zero.clone()
    return sum(ctt) / len(ctt), sum(aux) / len(ctt)
