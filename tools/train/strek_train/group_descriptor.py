"""Descriptor version 2 ("group_unet"): the U-Net built from C_N lifting and group convolutions.

Every map is a stack of regular fields (N channels each), so a quarter turn of the input turns every map and
moves group channel r to r + N/4 (exactly: zero "same" padding, pooling and upsampling all commute with quarter
turns, see unet.py).  The head's fields are sampled at a keypoint and cyclically aligned by the keypoint's
orientation (unet.align_to_orientation), which makes the descriptor invariant to the rotation the orientation
measures.  Training uses field batch norm; `export()` folds it into dense filters that keep the exact 90-degree
structure of docs/model.md, so the engine runs every layer as an ordinary dense convolution.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .basis import BasisSpec
from .config import descriptor_topology
from .layers import FieldBatchNorm, GroupConv, LiftConv
from .unet import sample_keypoint_descriptors, unet_forward


class _FieldConvBN(nn.Module):
    """Lifting or group convolution with zero "same" padding, field batch norm, optional ReLU."""

    def __init__(self, group_order: int, fields_in: int | None, fields_out: int, kernel: int, relu: bool):
        super().__init__()
        spec = BasisSpec(kernel=kernel)
        # The head (no ReLU after it) gets a unit-gain init and a non-affine norm: it keeps every descriptor field
        # at unit variance over the batch, against the collapse of all descriptors to one point.
        if fields_in is None:
            self.conv = LiftConv(group_order, fields_out, spec)
        else:
            self.conv = GroupConv(group_order, fields_in, fields_out, spec, gain=2.0 if relu else 1.0)
        self.norm = FieldBatchNorm(group_order, fields_out, affine=relu)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Symmetric zero padding commutes with quarter turns (unlike with other angles, where the image corners
        # move; the descriptor accepts that, the detector uses valid padding).
        k = self.conv.spec.kernel
        y = self.norm(F.conv2d(x, self.conv.filters(), self.conv.expanded_bias(), padding=k // 2))
        return torch.relu(y) if self.relu else y

    def export(self) -> tuple[torch.Tensor, torch.Tensor]:
        w, b = self.conv.export()
        return self.norm.fold(w, b)


class GroupDescriptor(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg
        self.topology = descriptor_topology(cfg)
        if not self.topology.group:
            raise ValueError(f"descriptor kind {self.topology.kind!r} is not group_unet")
        n = self.topology.group_order
        self.layers = nn.ModuleDict({c.name: _FieldConvBN(n, c.fields_in, c.fields_out, c.kernel, c.relu)
                                     for c in self.topology.convs})

    @property
    def stride(self) -> int:
        return self.topology.stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 1, H, W] -> L2-normalised map [B, F*N, H_o, W_o] (H_o = ceil(H / 2) per level down)."""
        return unet_forward(self.topology, x, lambda step, t: self.layers[step.name](t))

    def sample(self, dmap: torch.Tensor, xy: torch.Tensor, theta: torch.Tensor, image_hw) -> torch.Tensor:
        """Aligned, L2-normalised descriptors [K, D] at level-0 keypoints xy [K, 2] with orientations theta [K]."""
        return sample_keypoint_descriptors(self.topology, dmap, xy, theta, image_hw)

    def export(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {c.name: self.layers[c.name].export() for c in self.topology.convs}
