"""The descriptor losses: triplet margin loss with the hardest negative in the batch, and InfoNCE."""
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


def info_nce_loss(anchors: torch.Tensor, positives: torch.Tensor, image_ids: torch.Tensor, positions: torch.Tensor,
                  temperature: float = 0.07, exclusion_radius: float = 8.0):
    """Symmetric InfoNCE (as RELF): anchor i must pick positive i among all positives of the batch, and positive i
    anchor i, by softmax(cosine similarity / temperature).  Points of the same image pair within
    `exclusion_radius` px of point i are left out of its candidates (overlapping content, not true negatives).

    Every negative gets a gradient weighted by its softmax share, so the loss cannot collapse the way a triplet
    loss on hardest negatives did in its first ~1000 steps.  Returns (loss, statistics): `active` is the share of
    anchors whose most similar candidate is not their positive."""
    sim = anchors @ positives.t()
    n = len(anchors)
    eye = torch.eye(n, dtype=torch.bool, device=anchors.device)
    same_place = (image_ids[:, None] == image_ids[None, :]) & (torch.cdist(positions, positions) < exclusion_radius)
    logits = (sim / temperature).masked_fill(same_place & ~eye, float("-inf"))
    target = torch.arange(n, device=anchors.device)
    loss = 0.5 * (torch.nn.functional.cross_entropy(logits, target)
                  + torch.nn.functional.cross_entropy(logits.t(), target))
    with torch.no_grad():
        d = (2 - 2 * sim).clamp_min(0).sqrt()  # Euclidean distance of unit vectors
        d_neg = d.masked_fill(same_place | eye, float("inf"))
        hardest = torch.minimum(d_neg.min(dim=1).values, d_neg.min(dim=0).values)
        wrong = logits.argmax(dim=1) != target
    stats = {"pos_dist": d.diagonal().mean().item(), "neg_dist": hardest[torch.isfinite(hardest)].mean().item(),
             "active": wrong.float().mean().item()}
    return loss, stats
