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
    nearest valid point of image 2; infinite when image 2 has none)."""
    p, visible = reproject(xy1, h12, margin, size)
    d = torch.cdist(p, xy2.to(p.dtype))
    d = d.masked_fill(~valid2[:, None, :], float("inf"))
    distance = d.min(dim=2).values if d.shape[2] else torch.full_like(visible, float("inf"), dtype=p.dtype)
    return visible & valid1, distance


def repeatability_rewards(xy1, valid1, xy2, valid2, h12, margin: int, size, cfg: RewardConfig):
    """Per-draw rewards of both images ([B, K1], [B, K2]) and the masks of the draws that count (visible in both)."""
    h21 = torch.linalg.inv(h12)

    def rewards(counted, distance):
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
