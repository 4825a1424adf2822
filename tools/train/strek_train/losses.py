"""The descriptor loss: triplet margin loss at detected keypoints, hardest negative in the batch."""
from __future__ import annotations

import torch


def hardest_negative_triplet_loss(anchors: torch.Tensor, positives: torch.Tensor, image_ids: torch.Tensor,
                                  positions: torch.Tensor, margin: float = 0.5, exclusion_radius: float = 8.0):
    """anchors[i] (image 1) and positives[i] (image 2) describe the same point; every other positive and anchor of
    the batch is a negative, except points of the same image pair within `exclusion_radius` px of point i (their
    content overlaps, they are not true negatives).  Descriptors are L2-normalised; distances are Euclidean.

    loss_i = relu(margin + d(a_i, p_i) - min(min_j d(a_i, p_j), min_j d(a_j, p_i))).  Returns (loss, statistics)."""
    d = torch.cdist(anchors, positives)
    same_place = (image_ids[:, None] == image_ids[None, :]) & (torch.cdist(positions, positions) < exclusion_radius)
    excluded = same_place | torch.eye(len(anchors), dtype=torch.bool, device=anchors.device)
    d_neg = d.masked_fill(excluded, float("inf"))
    hardest = torch.minimum(d_neg.min(dim=1).values, d_neg.min(dim=0).values)
    pos = d.diagonal()
    per_point = torch.relu(margin + pos - hardest)
    stats = {"pos_dist": pos.mean().item(), "neg_dist": hardest[torch.isfinite(hardest)].mean().item(),
             "active": (per_point > 0).float().mean().item()}
    return per_point.mean(), stats
