"""Validation metrics: keypoints by non-maximum suppression, repeatability, descriptor matching accuracy."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .reward import reproject


def nms_topk(heatmap: torch.Tensor, k: int, radius: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The engine's keypoints (docs/model.md, NMS) on heatmap [H, W], the k best: (xy [K, 2] long, scores [K]).

    A pixel is kept if no other pixel within `radius` (Chebyshev) scores higher and no pixel before it (lower
    linear index) scores the same: a plateau gives one keypoint, not a dense cluster."""
    h, w = heatmap.shape
    neg = float("-inf")
    pooled = F.max_pool2d(heatmap[None, None], 2 * radius + 1, stride=1, padding=radius)[0, 0]
    keep = heatmap == pooled
    padded = F.pad(heatmap, (radius, radius, radius, radius), value=neg)
    for dy in range(-radius, 1):
        for dx in range(-radius, radius + 1):
            if dy == 0 and dx >= 0:
                break
            keep &= padded[radius + dy:radius + dy + h, radius + dx:radius + dx + w] != heatmap
    score = torch.where(keep, heatmap, torch.full_like(heatmap, neg)).flatten()
    k = min(k, int(torch.isfinite(score).sum()))
    top = score.topk(k)
    return torch.stack([top.indices % w, top.indices // w], dim=1), top.values


def repeatability(xy1: torch.Tensor, xy2: torch.Tensor, h12: torch.Tensor, margin: int, size, distance: float = 3.0):
    """rep@distance of design.md for heatmap keypoints of two images: (repeated points of 1 + repeated points of 2)
    / (visible points of 1 + visible points of 2).  Returns (repeatability, visible count)."""
    p12, vis1 = reproject(xy1[None].double(), h12[None].double(), margin, size)
    p21, vis2 = reproject(xy2[None].double(), torch.linalg.inv(h12)[None].double(), margin, size)
    rep1 = (torch.cdist(p12[0], xy2.double()).min(1).values <= distance) & vis1[0] if len(xy2) else vis1[0] & False
    rep2 = (torch.cdist(p21[0], xy1.double()).min(1).values <= distance) & vis2[0] if len(xy1) else vis2[0] & False
    visible = int(vis1.sum() + vis2.sum())
    return float(rep1.sum() + rep2.sum()) / max(visible, 1), visible


def matching_accuracy(xy1, desc1, xy2, desc2, h12, margin: int, distance: float = 3.0) -> tuple[float, int]:
    """mma@distance: share of mutual nearest-neighbour descriptor matches (heatmap keypoints of both images) whose
    reprojection error is at most `distance` px.  Returns (accuracy, number of matches)."""
    if len(xy1) == 0 or len(xy2) == 0:
        return 0.0, 0
    sim = desc1 @ desc2.t()
    nn12, nn21 = sim.argmax(1), sim.argmax(0)
    mutual = nn21[nn12] == torch.arange(len(xy1), device=sim.device)
    i = torch.nonzero(mutual).squeeze(1)
    p12, _ = reproject(xy1[i][None].double(), h12[None].double(), margin, (10**9, 10**9))
    err = (p12[0] - xy2[nn12[i]].double()).norm(dim=1)
    return float((err <= distance).float().mean()) if len(i) else 0.0, int(len(i))
