"""The exported model run from its dense tensors only (docs/model.md), as the engine runs it.

Used for the golden vectors and the export round-trip test: nothing here touches the training modules."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import descriptor_topology, detector_topology
from .layers import orientation_pool
from .unet import sample_keypoint_descriptors, unet_forward


def detector_forward(tensors: dict[str, torch.Tensor], cfg: dict, x: torch.Tensor) -> torch.Tensor:
    """x [1, 1, H, W] normalised -> group logits [1, N, H-R+1, W-R+1]: valid cross-correlations, ReLU but last."""
    for layer in detector_topology(cfg).convs:
        w, b = tensors[f"{layer.tensor_name}.weight"].to(x.dtype), tensors[f"{layer.tensor_name}.bias"].to(x.dtype)
        x = F.conv2d(x, w, b)
        if layer.relu:
            x = torch.relu(x)
    return x


def descriptor_forward(tensors: dict[str, torch.Tensor], cfg: dict, x: torch.Tensor) -> torch.Tensor:
    """x [1, 1, H, W] normalised -> L2-normalised descriptor map [1, D, H_o, W_o] (either kind): every layer a
    dense cross-correlation with zero "same" padding (k // 2) and bias, ReLU where the topology says."""
    def conv(step, t):
        w, b = tensors[f"{step.tensor_name}.weight"].to(t.dtype), tensors[f"{step.tensor_name}.bias"].to(t.dtype)
        y = F.conv2d(t, w, b, padding=step.kernel // 2)
        return torch.relu(y) if step.relu else y

    return unet_forward(descriptor_topology(cfg), x, conv)


def keypoint_descriptors(cfg: dict, descriptor_map: torch.Tensor, keypoints: torch.Tensor, image_hw) -> torch.Tensor:
    """Descriptors [K, D] at level-0 keypoints [K, 3] (x, y, orientation) from a map [D, H_o, W_o]."""
    return sample_keypoint_descriptors(descriptor_topology(cfg), descriptor_map, keypoints[:, :2], keypoints[:, 2],
                                       image_hw)


def run_model(tensors: dict[str, torch.Tensor], cfg: dict, image_u8: torch.Tensor, dtype=torch.float64,
              keypoints: torch.Tensor | None = None) -> dict:
    """All golden outputs for an 8-bit gray image [H, W]; with `keypoints` [K, 3] (x, y, orientation at level 0)
    also their `descriptors` [K, D]."""
    g = image_u8.to(dtype) / 255.0
    x = ((g - cfg["input"]["mean"]) / cfg["input"]["std"])[None, None]
    group_logits = detector_forward(tensors, cfg, x)[0]
    heatmap, orientation = orientation_pool(group_logits)
    out = {"group_logits": group_logits, "heatmap": heatmap, "orientation": orientation,
           "descriptor_map": descriptor_forward(tensors, cfg, x)[0]}
    if keypoints is not None:
        out["descriptors"] = keypoint_descriptors(cfg, out["descriptor_map"], keypoints.to(dtype), tuple(g.shape))
    return out


def expected_tensor_names(cfg: dict) -> list[str]:
    layers = (*detector_topology(cfg).convs, *descriptor_topology(cfg).convs)
    return [f"{layer.tensor_name}.{part}" for layer in layers for part in ("weight", "bias")]
