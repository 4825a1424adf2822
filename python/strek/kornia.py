"""strek features as kornia local affine frames (LAFs).

A LAF is `[A | c]` (2 x 3) with `A = scale * [[cos a, sin a], [-sin a, cos a]]`: kornia's `get_laf_center`,
`get_laf_scale` and `get_laf_orientation` (degrees) then return strek's position, scale and orientation. The frame's
x axis points along the keypoint's orientation, counter-clockwise as the image is displayed, as strek measures it.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
import kornia.feature as KF

from . import Features

__all__ = ["to_laf", "to_torch"]


def to_laf(features: Union[Features, Sequence[Features]], device: Union[str, torch.device] = "cpu") -> torch.Tensor:
    """LAFs of one image's features (1 x N x 2 x 3), or of several images with equal counts (B x N x 2 x 3)."""
    batch = [features] if isinstance(features, Features) else list(features)
    if len({len(f) for f in batch}) > 1:
        raise ValueError("to_laf of several images needs the same number of keypoints in each (Features[:k] cuts)")
    center = torch.from_numpy(np.stack([f.keypoints for f in batch])).to(device)
    scale = torch.from_numpy(np.stack([f.scales for f in batch]))[..., None, None].to(device)
    angle = torch.from_numpy(np.stack([np.degrees(f.orientations) for f in batch]))[..., None].to(device)
    return KF.laf_from_center_scale_ori(center, scale, angle)


def to_torch(features: Features, device: Union[str, torch.device] = "cpu") -> dict:
    """The arrays of `features` as torch tensors (keypoints, scores, orientations, scales, descriptors)."""
    return {name: torch.from_numpy(np.ascontiguousarray(getattr(features, name))).to(device)
            for name in ("keypoints", "scores", "orientations", "scales", "descriptors")}
