"""The repeatability reward and the REINFORCE loss of the detector."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass
class RewardConfig:
    match_distance: float = 3.0  # px, in the other image's heatmap
    reward: float = 1.0  # a repeated keypoint
    penalty: float = -0.5  # a visible keypoint that was not repeated
    # localisation: a repeated keypoint within `precise_distance` earns `precise_bonus` on top (0: off), so that
    # precise repeats are preferred without withdrawing the reward for the merely repeated ones
    precise_distance: float = 1.5
    precise_bonus: float = 0.0
    # weight of `localisation_loss` (px) beside the policy loss (0: off): REINFORCE credits the draws, this shapes
    # the scores around them so that the engine's sub-pixel refinement lands repeats on each other
    localisation_weight: float = 0.0
    baseline_momentum: float = 0.9  # exponential moving average of the mean reward

    def to_dict(self) -> dict:
        return asdict(self)


def warp_points(xy: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """xy [B, K, 2] float, h [B, 3, 3] -> [B, K, 2]."""
    p = torch.cat([xy, torch.ones_like(xy[..., :1])], dim=-1) @ h.transpose(1, 2)
    return p[..., :2] / p[..., 2:]


def reproject(xy: torch.Tensor, h: torch.Tensor, margin: int, size: tuple[int, int]):
    """Heatmap points of image 1 -> heatmap coordinates in image 2 and visibility (inside image 2's heatmap).

    The heatmap is smaller than the image by the receptive field: heatmap (x, y) is image (x + margin, y + margin)."""
    p = warp_points(xy.to(h.dtype) + margin, h) - margin
    hh, ww = size
    visible = (p[..., 0] >= 0) & (p[..., 0] <= ww - 1) & (p[..., 1] >= 0) & (p[..., 1] <= hh - 1)
    return p, visible


def nearest(xy1, valid1, xy2, valid2, h12, margin: int, size):
    """For each point of image 1: (counted: valid and visible in image 2, the distance from its reprojection to the
    nearest valid point of image 2, infinite when image 2 has none, and that point's index, 0 when none)."""
    p, visible = reproject(xy1, h12, margin, size)
    d = torch.cdist(p, xy2.to(p.dtype))
    d = d.masked_fill(~valid2[:, None, :], float("inf"))
    if not d.shape[2]:
        none = torch.full_like(visible, float("inf"), dtype=p.dtype)
        return visible & valid1, none, torch.zeros_like(visible, dtype=torch.long)
    distance, index = d.min(dim=2)
    return visible & valid1, distance, index


def repeatability_rewards(xy1, valid1, xy2, valid2, h12, margin: int, size, cfg: RewardConfig):
    """Per-draw rewards of both images ([B, K1], [B, K2]) and the masks of the draws that count (visible in both)."""
    h21 = torch.linalg.inv(h12)

    def rewards(counted, distance, _partner):
        r = torch.where(distance <= cfg.match_distance, cfg.reward, cfg.penalty)
        if cfg.precise_bonus:
            r = r + cfg.precise_bonus * (distance <= cfg.precise_distance)
        return r * counted, counted

    return (rewards(*nearest(xy1, valid1, xy2, valid2, h12, margin, size)),
            rewards(*nearest(xy2, valid2, xy1, valid1, h21, margin, size)))


def reinforce_loss(log_probs: list[torch.Tensor], rewards: list[torch.Tensor], masks: list[torch.Tensor],
                   baseline: float) -> torch.Tensor:
    """-mean over counted draws of (reward - baseline) * log p(draw): the REINFORCE estimator with a baseline.

    Each draw is credited with its own reward (not the return of the draws after it): lower variance, and the
    mask radius keeps draws nearly independent."""
    num = sum(((r - baseline) * lp * m).sum() for lp, r, m in zip(log_probs, rewards, masks))
    count = sum(m.sum() for m in masks).clamp_min(1)
    return -num / count


def parabola_offsets(heat: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """The engine's sub-pixel refinement (docs/model.md) of heatmap pixels xy [B, K, 2] (long) of heat [B, H, W],
    differentiable in the scores: offsets [B, K, 2] in [-0.5, 0.5], 0 on the border or where the parabola is not
    concave."""
    b, h, w = heat.shape
    x, y = xy[..., 0].clamp(0, w - 1), xy[..., 1].clamp(0, h - 1)
    flat = heat.reshape(b, h * w)

    def at(xx, yy):
        return flat.gather(1, yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1))

    s = at(x, y)

    def axis(before, after, inside):
        curvature = (before + after) - 2 * s
        concave = inside & (curvature < 0)
        offset = 0.5 * (before - after) / torch.where(concave, curvature, -torch.ones_like(curvature))
        return torch.where(concave, offset.clamp(-0.5, 0.5), torch.zeros_like(offset))

    dx = axis(at(x - 1, y), at(x + 1, y), (x > 0) & (x < w - 1))
    dy = axis(at(x, y - 1), at(x, y + 1), (y > 0) & (y < h - 1))
    return torch.stack([dx, dy], dim=-1)


def localisation_loss(heat1, xy1, valid1, heat2, xy2, valid2, h12, margin: int, distance: float):
    """The mean distance (px) between refined keypoints that repeat: each counted keypoint of image 1 is paired with
    the nearest keypoint of image 2 when that lies within `distance` of its reprojection; the loss is the distance
    between the reprojection of its refined position and the refined position of its partner, in both directions.

    Differentiable through the parabola offsets only: it shapes the scores around a peak so that the refinement
    moves repeated keypoints onto each other.  Returns (loss, statistics: the pairs' mean distance before and after
    refinement)."""
    size = tuple(heat1.shape[-2:])
    r1 = xy1.to(heat1.dtype) + parabola_offsets(heat1, xy1)
    r2 = xy2.to(heat2.dtype) + parabola_offsets(heat2, xy2)

    def one_way(xa, va, ra, xb, vb, rb, h):
        counted, d, partner = nearest(xa, va, xb, vb, h, margin, size)
        pair = counted & (d <= distance)
        q, _ = reproject(ra, h, margin, size)
        target = rb.gather(1, partner[..., None].expand(-1, -1, 2)).to(q.dtype) if xb.shape[1] else q.detach()
        err = ((q - target) ** 2).sum(-1).add(1e-6).sqrt()
        return (err * pair).sum(), torch.where(pair, d, 0.0).sum(), pair.sum()

    h21 = torch.linalg.inv(h12)
    e1, before1, n1 = one_way(xy1, valid1, r1, xy2, valid2, r2, h12)
    e2, before2, n2 = one_way(xy2, valid2, r2, xy1, valid1, r1, h21)
    n = (n1 + n2).clamp_min(1)
    loss = ((e1 + e2) / n).to(heat1.dtype)
    return loss, {"loc_before": float((before1 + before2) / n), "loc_after": float(loss.detach()),
                  "loc_pairs": int(n1 + n2)}
