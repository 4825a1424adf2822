"""Measuring equivariance: exact under 90-degree rotations, approximate under other angles.

A layer (or network) `net(x, theta)` whose filters are all rotated by theta satisfies, in the continuum,
    net(rotate(x, a), 0) == rotate(net(x, -a), a)
because convolution, ReLU and a per-field batch norm (eval mode) commute with rotation.  For a = 90 degrees both
sides are exact on the grid (net(x, -90deg) is net(x) with its group channels shifted by -N/4); for other angles the
input is sampled analytically (a smooth sum of Gaussian blobs) and the right-hand side is resampled bilinearly, so
the measured error is the grid-sampling error of the filters plus the resampling error of the output.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def rotation_ccw(theta: float) -> np.ndarray:
    """2x2 matrix rotating (x, y-down) coordinates counter-clockwise as displayed."""
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, s], [-s, c]])


def blob_image(size: int, theta: float, seed: int, blobs: int = 60, sigma=(1.5, 3.0)) -> torch.Tensor:
    """A smooth random image [1, 1, size, size] (float64), rotated counter-clockwise by theta about its centre,
    sampled exactly from its continuous definition."""
    rng = np.random.default_rng(seed)
    c = (size - 1) / 2
    centres = rng.uniform(-size / 2, size / 2, (blobs, 2))
    sig = rng.uniform(*sigma, blobs)
    amp = rng.normal(0, 1, blobs)
    yy, xx = np.meshgrid(np.arange(size) - c, np.arange(size) - c, indexing="ij")
    pts = np.stack([xx.ravel(), yy.ravel()], 1) @ rotation_ccw(-theta).T  # R^-1 p
    d2 = ((pts[:, None, :] - centres[None]) ** 2).sum(-1)
    img = (amp * np.exp(-d2 / (2 * sig**2))).sum(1).reshape(size, size)
    return torch.from_numpy(img)[None, None]


def rotate_map(t: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotates [B, C, H, W] counter-clockwise by theta about the centre, bilinear (used on outputs only)."""
    _, _, h, w = t.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    yy, xx = torch.meshgrid(torch.arange(h, dtype=t.dtype) - cy, torch.arange(w, dtype=t.dtype) - cx, indexing="ij")
    r = torch.from_numpy(rotation_ccw(-theta)).to(t.dtype)
    sx = r[0, 0] * xx + r[0, 1] * yy + cx
    sy = r[1, 0] * xx + r[1, 1] * yy + cy
    grid = torch.stack([2 * sx / (w - 1) - 1, 2 * sy / (h - 1) - 1], -1)[None].expand(t.shape[0], -1, -1, -1)
    return F.grid_sample(t, grid, mode="bilinear", align_corners=True)


def disk_mask(h: int, w: int, margin: float = 1.5) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    return (xx**2 + yy**2).sqrt() <= min(h, w) / 2 - margin


def rotation_error(net, theta: float, size: int = 64, seed: int = 0) -> float:
    """Relative L2 error ||net(rot x) - rot(net_{-theta}(x))|| / ||rot(net_{-theta}(x))|| over the central disk."""
    with torch.no_grad():
        x = blob_image(size, 0.0, seed)
        xr = blob_image(size, theta, seed)
        lhs = net(xr, 0.0)
        rhs = rotate_map(net(x, -theta), theta)
    m = disk_mask(*lhs.shape[-2:])
    diff = (lhs - rhs)[..., m]
    return float(diff.norm() / rhs[..., m].norm())
