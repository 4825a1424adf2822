"""Descriptor version 2 (group_unet): exact quarter-turn invariance of the aligned descriptors, the alignment
formula, the loss, a few training steps, and the camera-like augmentation's determinism."""
import math

import numpy as np
import pytest
import torch

from strek_train import export
from strek_train.basis import rot90
from strek_train.config import default_config, default_descriptor, descriptor_macs_per_pixel, DESCRIPTOR_MAC_BUDGET
from strek_train.data import (PairConfig, PairSource, jpeg_roundtrip, make_pair, motion_blur, photometric_basic,
                              synthetic_image)
from strek_train.detector import Detector
from strek_train.group_descriptor import GroupDescriptor
from strek_train.layers import orientation_pool
from strek_train.losses import info_nce_loss
from strek_train.metrics import nms_topk
from strek_train.reward import reproject
from strek_train.unet import align_to_orientation, output_size

SMALL = {"kind": "group_unet", "kernel": 3, "encoder": [1, 2, 2, 3], "decoder": [2], "head": 2, "dim": 16}


def group_cfg(n=8, small=True):
    cfg = default_config(group_order=n)
    cfg["descriptor"] = dict(SMALL, dim=2 * n) if small else default_descriptor("group_unet")
    return cfg


def random_descriptor(cfg, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    desc = GroupDescriptor(cfg).to(dtype)
    for layer in desc.layers.values():  # non-trivial folded statistics
        layer.norm.running_mean.uniform_(-0.5, 0.5)
        layer.norm.running_var.uniform_(0.5, 2.0)
    return desc.eval()


def quarter_turn(xy: torch.Tensor, theta: torch.Tensor, hw, turns: int):
    """Keypoints of an H x W image after `turns` counter-clockwise quarter turns: positions and orientations."""
    h, w = hw
    for _ in range(turns):
        xy = torch.stack([xy[:, 1], w - 1 - xy[:, 0]], 1)
        h, w = w, h
    return xy, torch.remainder(theta + turns * math.pi / 2, 2 * math.pi)


def test_default_group_descriptor_is_within_budget():
    cfg = group_cfg(small=False)
    assert cfg["descriptor"]["dim"] == 128 and cfg["descriptor"]["head"] * cfg["group_order"] == 128
    assert descriptor_macs_per_pixel(cfg) <= DESCRIPTOR_MAC_BUDGET


@pytest.mark.parametrize("n,small,hw", [(8, True, (45, 53)), (8, True, (48, 64)), (4, True, (37, 29)),
                                        (8, False, (33, 40))])
def test_aligned_descriptors_equal_at_quarter_turns(n, small, hw):
    cfg = group_cfg(n, small)
    desc = random_descriptor(cfg, dtype=torch.float32)
    h, w = hw
    x = torch.randn(1, 1, h, w)
    rng = np.random.default_rng(1)
    xy = torch.from_numpy(np.stack([rng.uniform(0, w - 1, 40), rng.uniform(0, h - 1, 40)], 1)).float()
    xy[:4] = torch.tensor([[0.0, 0.0], [w - 1.0, h - 1.0], [w / 2, h / 2], [3.0, h - 1.0]])  # borders: clamping
    theta = torch.from_numpy(rng.uniform(0, 2 * math.pi, 40)).float()
    theta[:3] = torch.tensor([0.0, 2 * math.pi / n, 2 * math.pi - 1e-6])  # on a bin, on a wrap
    with torch.no_grad():
        d0 = desc.sample(desc(x)[0], xy, theta, (h, w))
        for turns in (1, 2, 3):
            xr = rot90(x, turns)
            xy_r, theta_r = quarter_turn(xy, theta, (h, w), turns)
            dr = desc.sample(desc(xr)[0], xy_r, theta_r, tuple(xr.shape[-2:]))
            assert (dr - d0).abs().max() < 1e-5, turns
    # Not trivially so: without the alignment the descriptors of a quarter turn differ.
    with torch.no_grad():
        dr = desc.sample(desc(rot90(x))[0], quarter_turn(xy, theta, (h, w), 1)[0], theta, (w, h))
    assert (dr - d0).abs().max() > 1e-2


def test_detector_and_descriptor_together_at_quarter_turns():
    """The engine's path: NMS keypoints of the detector, its orientations, the aligned descriptors."""
    cfg = group_cfg(8, small=True)
    torch.manual_seed(3)
    det = Detector(cfg).double().eval()
    desc = random_descriptor(cfg, seed=3)
    img = torch.from_numpy(synthetic_image(np.random.default_rng(5), 61, 54)).double()[None, None] * 4 - 2
    margin = (det.receptive_field - 1) // 2

    def extract(x):
        with torch.no_grad():
            score, theta = orientation_pool(det(x)[0])
            xy, _ = nms_topk(score, 20)
            image_xy = xy.double() + margin
            return image_xy, desc.sample(desc(x)[0], image_xy, theta[xy[:, 1], xy[:, 0]], tuple(x.shape[-2:]))

    xy0, d0 = extract(img)
    for turns in (1, 2, 3):
        xy_r, d_r = extract(rot90(img, turns))
        expected, _ = quarter_turn(xy0, torch.zeros(len(xy0)), (61, 54), turns)
        # The same keypoints (the detector is exactly equivariant); match them by position.
        dist = torch.cdist(expected, xy_r)
        assert dist.min(1).values.max() < 1e-9
        assert (d_r[dist.argmin(1)] - d0).abs().max() < 1e-9


def test_alignment_formula():
    # One field over C4, orientation 1.25 bins: i0 = 1, f = 0.25, aligned[j] = 0.75 v[j + 1] + 0.25 v[j + 2].
    v = torch.tensor([[1.0, 2.0, 4.0, 8.0]], dtype=torch.float64)
    a = align_to_orientation(v, torch.tensor([1.25 * 2 * math.pi / 4], dtype=torch.float64), 4)
    assert torch.allclose(a, torch.tensor([[0.75 * 2 + 0.25 * 4, 0.75 * 4 + 0.25 * 8, 0.75 * 8 + 0.25 * 1,
                                            0.75 * 1 + 0.25 * 2]], dtype=torch.float64), atol=1e-12)
    # Two fields, each shifted on its own; theta = 0 is the identity; theta = one bin is an exact roll.
    v = torch.arange(16, dtype=torch.float64)[None]
    assert torch.equal(align_to_orientation(v, torch.zeros(1, dtype=torch.float64), 8), v)
    rolled = align_to_orientation(v, torch.tensor([2 * math.pi / 8], dtype=torch.float64), 8)
    assert torch.allclose(rolled, torch.roll(v.reshape(1, 2, 8), -1, dims=2).reshape(1, 16), atol=1e-12)
    # A view without keypoints.
    assert align_to_orientation(torch.zeros(0, 16), torch.zeros(0), 8).shape == (0, 16)


def test_output_size_follows_ceil_halving():
    cfg = group_cfg(8)
    desc = random_descriptor(cfg)
    for h, w in [(47, 61), (48, 64), (9, 7)]:
        with torch.no_grad():
            out = desc(torch.zeros(1, 1, h, w, dtype=torch.float64))
        assert tuple(out.shape[-2:]) == output_size(desc.topology, h, w)
    assert output_size(desc.topology, 47, 61) == (12, 16)


def test_exported_group_descriptor_structure():
    cfg = group_cfg(8, small=False)
    desc = random_descriptor(cfg, dtype=torch.float32)
    det = Detector(cfg).eval()
    tensors = export.export_tensors(det, desc)  # checks every descriptor layer's 90-degree structure exactly
    assert tensors["descriptor.enc0a.weight"].shape == (24, 1, 3, 3)
    assert tensors["descriptor.dec0.weight"].shape == (128, 288, 3, 3)
    assert tensors["descriptor.head.weight"].shape == (128, 128, 1, 1)
    b = tensors["descriptor.enc1b.bias"].reshape(-1, 8)
    assert torch.equal(b, b[:, :1].expand_as(b))


def test_info_nce_loss():
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(50, 16), dim=1)
    ids, pos = torch.zeros(50, dtype=torch.long), torch.rand(50, 2) * 1000
    good, stats = info_nce_loss(a, a, ids, pos)
    assert stats["active"] == 0.0 and good < 0.1
    same = torch.nn.functional.normalize(torch.ones(50, 16), dim=1)
    collapsed, _ = info_nce_loss(same, same, ids, pos)
    assert abs(collapsed.item() - math.log(50)) < 1e-4


def true_orientations(h12: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """The rotation (counter-clockwise as displayed) of the homography's local linear map at each point."""
    eps = 0.5
    p = lambda q: reproject(q[None].double(), h12[None], 0, (10**9, 10**9))[0][0]
    dx = p(xy + torch.tensor([eps, 0.0])) - p(xy - torch.tensor([eps, 0.0]))
    return torch.remainder(torch.atan2(-dx[:, 1], dx[:, 0]), 2 * math.pi).float()


def test_group_descriptor_steps_reduce_the_info_nce_loss():
    cfg = group_cfg(8, small=True)
    rng = np.random.default_rng(0)
    images = [synthetic_image(rng, 120, 140) for _ in range(3)]
    source = PairSource(images, PairConfig(size=64, augment="real"), cfg, seed=0)
    v1, v2, h12 = source.batch(0, 2)
    torch.manual_seed(0)
    desc = GroupDescriptor(cfg)
    batch = []
    for i in range(2):
        xy = torch.from_numpy(rng.uniform(6, 57, (40, 2)))
        p, vis = reproject(xy[None], h12[i][None], 0, (64, 64))
        xy, p = xy[vis[0]].float(), p[0][vis[0]].float()
        batch.append((xy, p, true_orientations(h12[i], xy)))

    def loss():
        d = desc(torch.cat([v1, v2]))
        a = torch.cat([desc.sample(d[i], xy, torch.zeros(len(xy)), (64, 64)) for i, (xy, _, _) in enumerate(batch)])
        p = torch.cat([desc.sample(d[2 + i], q, th, (64, 64)) for i, (_, q, th) in enumerate(batch)])
        ids = torch.cat([torch.full((len(xy),), i) for i, (xy, _, _) in enumerate(batch)])
        return info_nce_loss(a, p, ids, torch.cat([q for _, q, _ in batch]))[0]

    opt = torch.optim.Adam(desc.parameters(), lr=3e-3)
    first = loss().item()
    for _ in range(10):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 0.8 * first


def test_augmentation_is_deterministic_and_keeps_the_basic_stream():
    cfg = default_config()
    rng = np.random.default_rng(2)
    images = [synthetic_image(rng, 100, 110) for _ in range(3)]
    hires = [synthetic_image(rng, 400, 500) for _ in range(2)]
    real = PairConfig(size=48, augment="real", hires_fraction=0.5)
    a = PairSource(images, real, cfg, seed=4, hires=hires)
    b = PairSource(images, real, cfg, seed=4, hires=hires)
    for index in range(6):
        for x, y in zip(a.pair(7, index), b.pair(7, index)):
            assert np.array_equal(x, y)
    assert not np.array_equal(a.pair(7, 0)[0], a.pair(8, 0)[0])
    # The basic mode draws exactly what it drew before these options existed: the image index, then make_pair.
    basic = PairSource(images, PairConfig(size=48), cfg, seed=4)
    r = np.random.default_rng([4, 3, 1])
    i = int(r.integers(len(images)))
    for x, y in zip(basic.pair(3, 1), make_pair(images[i], r, PairConfig(size=48))):
        assert np.array_equal(x, y)


def test_camera_like_changes():
    v = synthetic_image(np.random.default_rng(1), 64, 64)
    j = jpeg_roundtrip(v, 20)
    assert 0 < np.abs(j - v).mean() < 0.1
    m = motion_blur(v, 9, 0.3)
    assert abs(m.mean() - v.mean()) < 0.01 and np.abs(np.diff(m, axis=1)).mean() < np.abs(np.diff(v, axis=1)).mean()
    # Under "basic" the original function runs, untouched.
    same = PairConfig()
    assert np.array_equal(photometric_basic(np.random.default_rng(0), same, v),
                          photometric_basic(np.random.default_rng(0), same, v))
