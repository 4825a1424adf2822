"""The descriptor: a small U-Net on the normalised gray image, exactly as docs/model.md ("Descriptor").

Training uses batch norm after each convolution; `export()` folds it, so the exported network is the plain
conv + bias + ReLU U-Net that the engine runs."""
from __future__ import annotations

import torch
import torch.nn as nn

from .config import DESCRIPTOR_MAC_BUDGET, descriptor_macs_per_pixel, descriptor_stride, descriptor_topology
from .unet import bilinear_at, l2_normalize, sample_keypoint_descriptors, unet_forward


class _ConvBN(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int, relu: bool = True, affine: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, padding=k // 2)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)
        self.relu = relu

    def forward(self, x):
        y = self.bn(self.conv(x))
        return torch.relu(y) if self.relu else y

    def export(self) -> tuple[torch.Tensor, torch.Tensor]:
        gamma = self.bn.weight if self.bn.affine else torch.ones_like(self.bn.running_var)
        beta = self.bn.bias if self.bn.affine else torch.zeros_like(self.bn.running_mean)
        scale = gamma / torch.sqrt(self.bn.running_var + self.bn.eps)
        w = self.conv.weight * scale[:, None, None, None]
        b = (self.conv.bias - self.bn.running_mean) * scale + beta
        return w.detach().clone(), b.detach().clone()


class Descriptor(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg
        d = cfg["descriptor"]
        if d["kind"] != "unet":
            raise ValueError(f"descriptor kind {d['kind']!r} is not supported")
        self.topology = descriptor_topology(cfg)
        self.layers = nn.ModuleDict()
        for c in self.topology.convs:
            # The head's batch norm (the layer without ReLU; no affine, folded at export) keeps every descriptor
            # channel at unit variance over the batch: with hardest negatives from the first step, descriptors
            # otherwise collapse to one point (measured: positive and negative distances both under 0.1 after 40
            # steps).
            self.layers[c.name] = _ConvBN(c.c_in, c.c_out, c.kernel, relu=c.relu, affine=c.relu)

    @property
    def stride(self) -> int:
        return self.topology.stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 1, H, W] -> L2-normalised descriptor map [B, D, H/S, W/S] (floor at every pooling)."""
        return unet_forward(self.topology, x, lambda step, t: self.layers[step.name](t))

    def sample(self, dmap: torch.Tensor, xy: torch.Tensor, theta: torch.Tensor | None, image_hw) -> torch.Tensor:
        """Descriptors [K, D] at level-0 keypoints; version 1 ignores the orientation."""
        return sample_keypoint_descriptors(self.topology, dmap, xy, theta, image_hw)

    def export(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {c.name: self.layers[c.name].export() for c in self.topology.convs}


def sample_descriptors(dmap: torch.Tensor, xy: torch.Tensor, stride: int) -> torch.Tensor:
    """Bilinear sampling of a descriptor map at level-0 pixel positions (docs/model.md), L2-renormalised.

    dmap [D, Hd, Wd], xy [K, 2] (x, y) in input pixels -> [K, D]."""
    out = bilinear_at(dmap, (xy[:, 0] + 0.5) / stride - 0.5, (xy[:, 1] + 0.5) / stride - 0.5)
    return l2_normalize(out, dim=1)


def build_descriptor(cfg: dict) -> nn.Module:
    """The training module of the kind `cfg["descriptor"]["kind"]` names ("unet": version 1, "group_unet": 2)."""
    if cfg["descriptor"]["kind"] == "group_unet":
        from .group_descriptor import GroupDescriptor

        return GroupDescriptor(cfg)
    return Descriptor(cfg)


def describe_budget(cfg: dict) -> str:
    macs = descriptor_macs_per_pixel(cfg)
    verdict = "within" if macs <= DESCRIPTOR_MAC_BUDGET else "OVER"
    d = cfg["descriptor"]
    unit = f"fields of C{cfg['group_order']}, head {d.get('head')} fields" if d["kind"] == "group_unet" else "channels"
    return (f"descriptor: {d['kind']} encoder {d['encoder']} decoder {d['decoder']} ({unit}) dim {d['dim']}, stride "
            f"{descriptor_stride(cfg)}, {macs:.0f} MAC/px ({verdict} the {DESCRIPTOR_MAC_BUDGET} budget)")


if __name__ == "__main__":
    from .config import default_config

    print(describe_budget(default_config()))
