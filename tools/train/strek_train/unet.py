"""The descriptor U-Net's walk, shared by the training modules (both kinds), the reference forward and tools/gpu.

`unet_forward` runs the steps of `config.descriptor_topology` with a caller-supplied convolution, so the training
module (steerable filters, batch norm) and the reference (exported dense tensors only) cannot disagree on the order
of layers, the resampling or the skips.  Keypoint sampling, including the group alignment of version 2, lives here
too: the engine implements exactly these formulas (tools/train/README.md, "Descriptor version 2").
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from .config import (POOL_BILINEAR_HALF, POOL_MEAN_2X2, DescConv, DescriptorTopology, KeepSkip, L2Normalize, Pool,
                     UpsampleConcat)


def l2_normalize(x: torch.Tensor, dim: int) -> torch.Tensor:
    return x / x.norm(dim=dim, keepdim=True).clamp_min(1e-12)


def resize_bilinear(x: torch.Tensor, size) -> torch.Tensor:
    """PyTorch's bilinear resize, align_corners=False: output u samples source max(0, (u + 0.5) * in/out - 0.5),
    taps floor and min(floor + 1, in - 1).

    The sample positions are symmetric about the map's centre for any sizes (u and out-1-u sample mirrored
    positions), so the resize commutes with flips and quarter turns, up to the rounding of the fractions."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def half_size(h: int, w: int) -> tuple[int, int]:
    return (h + 1) // 2, (w + 1) // 2


def downsample_group(x: torch.Tensor) -> torch.Tensor:
    """The group U-Net's pooling: bilinear resize to (ceil(H/2), ceil(W/2)).

    For an even side this is exactly the 2x2 mean (the sources sit at 2u + 0.5, fractions 0.5).  Unlike the 2x2
    mean with floor, it keeps the grid centred for odd sides too (floor drops the last row, which a quarter turn
    moves to the first column), so a quarter turn of the input is a quarter turn of every map at every size."""
    return resize_bilinear(x, half_size(*x.shape[-2:]))


def downsample_plain(x: torch.Tensor) -> torch.Tensor:
    """Version 1's pooling: 2x2 mean, stride 2, floor (an odd last row / column is dropped)."""
    return F.avg_pool2d(x, 2)


POOLINGS = {POOL_MEAN_2X2: downsample_plain, POOL_BILINEAR_HALF: downsample_group}
POOLED_SIZES = {POOL_MEAN_2X2: lambda h, w: (h // 2, w // 2), POOL_BILINEAR_HALF: half_size}

ConvFn = Callable[[DescConv, torch.Tensor], torch.Tensor]


def unet_forward(topo: DescriptorTopology, x: torch.Tensor, conv: ConvFn) -> torch.Tensor:
    """x [B, 1, H, W] normalised gray -> L2-normalised descriptor map [B, D, H_o, W_o], step by step.

    `conv(step, x)` applies the step's convolution with zero "same" padding, its bias, and the ReLU that the step
    gives it.  Skips are concatenated after the upsampled map (channels, hence whole fields)."""
    skips = {}
    for step in topo.steps:
        if isinstance(step, DescConv):
            x = conv(step, x)
        elif isinstance(step, Pool):
            x = POOLINGS[step.mode](x)
        elif isinstance(step, KeepSkip):
            skips[step.level] = x
        elif isinstance(step, UpsampleConcat):
            skip = skips[step.skip]
            x = torch.cat([resize_bilinear(x, skip.shape[-2:]), skip], dim=1)
        elif isinstance(step, L2Normalize):
            x = l2_normalize(x, dim=1)
        else:
            raise TypeError(f"unknown descriptor step {step!r}")
    return x


def output_size(topo: DescriptorTopology, h: int, w: int) -> tuple[int, int]:
    """The descriptor map's size for an H x W input: the same walk, on sizes."""
    sizes = {}
    for step in topo.steps:
        if isinstance(step, Pool):
            h, w = POOLED_SIZES[step.mode](h, w)
        elif isinstance(step, KeepSkip):
            sizes[step.level] = (h, w)
        elif isinstance(step, UpsampleConcat):
            h, w = sizes[step.skip]
    return h, w


def bilinear_at(dmap: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """dmap [D, Hd, Wd] sampled at map coordinates (u, v) [K], clamped to the map -> [K, D]."""
    _, hd, wd = dmap.shape
    u, v = u.clamp(0, wd - 1), v.clamp(0, hd - 1)
    u0, v0 = u.floor().long(), v.floor().long()
    u1, v1 = (u0 + 1).clamp(max=wd - 1), (v0 + 1).clamp(max=hd - 1)
    fu, fv = (u - u0).to(dmap.dtype), (v - v0).to(dmap.dtype)
    out = (dmap[:, v0, u0] * (1 - fu) * (1 - fv) + dmap[:, v0, u1] * fu * (1 - fv)
           + dmap[:, v1, u0] * (1 - fu) * fv + dmap[:, v1, u1] * fu * fv)
    return out.t()


def align_to_orientation(desc: torch.Tensor, theta: torch.Tensor, group_order: int) -> torch.Tensor:
    """Group aligning: desc [K, F*N] (F fields over the group axis), theta [K] radians -> [K, F*N].

    t = theta * N / (2 pi) in bins, i0 = floor(t), f = t - i0;
    aligned[d*N + j] = (1 - f) * desc[d*N + (j + i0) mod N] + f * desc[d*N + (j + i0 + 1) mod N].
    Rotating the image by +2pi/N moves group channel r to r + 1 and adds one bin to theta, so the two cancel:
    exactly at quarter turns, up to the interpolation between the N bins at other angles."""
    n = group_order
    k = desc.shape[0]
    t = torch.remainder(theta.to(torch.float64) * (n / (2 * math.pi)), n)
    i0 = t.floor()
    f = (t - i0).to(desc.dtype)[:, None, None]
    j = torch.arange(n, device=desc.device)
    idx0 = (j[None, :] + i0.long()[:, None]) % n  # [K, N]
    idx1 = (idx0 + 1) % n
    fields = desc.reshape(k, desc.shape[1] // n, n)  # explicit: K may be 0 (a view without keypoints)
    g0 = fields.gather(2, idx0[:, None, :].expand_as(fields))
    g1 = fields.gather(2, idx1[:, None, :].expand_as(fields))
    return ((1 - f) * g0 + f * g1).reshape(desc.shape)


def sample_keypoint_descriptors(topo: DescriptorTopology, dmap: torch.Tensor, xy: torch.Tensor,
                                theta: torch.Tensor | None, image_hw: tuple[int, int]) -> torch.Tensor:
    """Descriptors [K, D] at level-0 pixel positions xy [K, 2] (x, y) with orientations theta [K].

    Version 1 ("unet"): u = (x + 0.5) / S - 0.5 (S the output stride), bilinear, L2-renormalised; theta unused.
    Version 2 ("group_unet"): u = (x + 0.5) * W_o / W - 0.5 (W_o the map's width, W the image's; the same for
    v with heights), bilinear, then aligned by theta (align_to_orientation), then L2-renormalised."""
    _, hd, wd = dmap.shape
    if topo.group:
        h, w = image_hw
        u = (xy[:, 0] + 0.5) * (wd / w) - 0.5
        v = (xy[:, 1] + 0.5) * (hd / h) - 0.5
        desc = align_to_orientation(bilinear_at(dmap, u, v), theta, topo.group_order)
    else:
        s = topo.stride
        desc = bilinear_at(dmap, (xy[:, 0] + 0.5) / s - 0.5, (xy[:, 1] + 0.5) / s - 0.5)
    return l2_normalize(desc, dim=1)
