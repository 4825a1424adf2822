"""The exported model run from its dense tensors only (docs/model.md), as the engine runs it.

Used for the golden vectors and the export round-trip test: nothing here touches the training modules."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import descriptor_convs
from .layers import orientation_pool


def detector_forward(tensors: dict[str, torch.Tensor], cfg: dict, x: torch.Tensor) -> torch.Tensor:
    """x [1, 1, H, W] normalised -> group logits [1, N, H-R+1, W-R+1]: valid cross-correlations, ReLU but last."""
    layers = len(cfg["detector"]["fields"])
    for i in range(layers):
        x = F.conv2d(x, tensors[f"detector.{i}.weight"].to(x.dtype), tensors[f"detector.{i}.bias"].to(x.dtype))
        if i < layers - 1:
            x = torch.relu(x)
    return x


def descriptor_forward(tensors: dict[str, torch.Tensor], cfg: dict, x: torch.Tensor) -> torch.Tensor:
    """x [1, 1, H, W] normalised -> L2-normalised descriptor map [1, D, H/S, W/S]."""
    d = cfg["descriptor"]
    n_enc, n_dec = len(d["encoder"]), len(d["decoder"])

    def conv(name, t, relu=True):
        w, b = tensors[f"descriptor.{name}.weight"].to(t.dtype), tensors[f"descriptor.{name}.bias"].to(t.dtype)
        y = F.conv2d(t, w, b, padding=w.shape[-1] // 2)
        return torch.relu(y) if relu else y

    skips = []
    for level in range(n_enc):
        if level > 0:
            x = F.avg_pool2d(x, 2)
        x = conv(f"enc{level}b", conv(f"enc{level}a", x))
        skips.append(x)
    for m in range(n_dec):
        skip = skips[n_enc - 2 - m]
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = conv(f"dec{m}", torch.cat([x, skip], dim=1))
    y = conv("head", x, relu=False)
    return y / y.norm(dim=1, keepdim=True).clamp_min(1e-12)


def run_model(tensors: dict[str, torch.Tensor], cfg: dict, image_u8: torch.Tensor, dtype=torch.float64) -> dict:
    """All golden outputs for an 8-bit gray image [H, W]."""
    g = image_u8.to(dtype) / 255.0
    x = ((g - cfg["input"]["mean"]) / cfg["input"]["std"])[None, None]
    group_logits = detector_forward(tensors, cfg, x)[0]
    heatmap, orientation = orientation_pool(group_logits)
    return {"group_logits": group_logits, "heatmap": heatmap, "orientation": orientation,
            "descriptor_map": descriptor_forward(tensors, cfg, x)[0]}


def expected_tensor_names(cfg: dict) -> list[str]:
    names = []
    for i in range(len(cfg["detector"]["fields"])):
        names += [f"detector.{i}.weight", f"detector.{i}.bias"]
    for name, *_ in descriptor_convs(cfg):
        names += [f"descriptor.{name}.weight", f"descriptor.{name}.bias"]
    return names
