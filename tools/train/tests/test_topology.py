"""The model's topology, derived once from the config (config.detector_topology, config.descriptor_topology) and
walked by every consumer: the multiply-add counts, the training modules, the reference forward, the export and
tools/gpu/strek_torch.py."""
import importlib.util
from pathlib import Path

import pytest
import torch

from strek_train import export
from strek_train.basis import rot90
from strek_train.config import (DescConv, KeepSkip, L2Normalize, Pool, UpsampleConcat, default_config,
                                default_descriptor, descriptor_macs_per_pixel, descriptor_topology,
                                detector_macs_per_pixel, detector_topology)
from strek_train.descriptor import build_descriptor
from strek_train.detector import Detector
from strek_train.reference import descriptor_forward, detector_forward, expected_tensor_names
from strek_train.unet import output_size

SMALL_GROUP = {"kind": "group_unet", "kernel": 3, "encoder": [1, 2, 2, 3], "decoder": [2], "head": 2, "dim": 16}
SMALL_PLAIN = {"kind": "unet", "kernel": 3, "encoder": [4, 6, 8], "decoder": [6, 5], "dim": 8}
NO_DECODER = {"kind": "unet", "kernel": 3, "encoder": [4, 6], "decoder": [], "dim": 8}


def config_with(descriptor: dict) -> dict:
    cfg = default_config()
    cfg["descriptor"] = dict(descriptor)
    return cfg


def random_models(cfg: dict, seed: int = 0):
    """A detector and a descriptor with non-trivial batch-norm statistics, in eval mode, float64."""
    torch.manual_seed(seed)
    det, desc = Detector(cfg, logit_gain=0.01), build_descriptor(cfg)
    for name, buf in [*det.named_buffers(), *desc.named_buffers()]:
        if name.endswith("running_mean"):
            buf.uniform_(-0.5, 0.5)
        elif name.endswith("running_var"):
            buf.uniform_(0.5, 2.0)
    return det.double().eval(), desc.double().eval()


def test_multiply_adds_of_the_default_models():
    assert detector_macs_per_pixel(default_config()) == 35600
    assert descriptor_macs_per_pixel(default_config()) == 27664  # version 1 ("unet")
    assert descriptor_macs_per_pixel(config_with(default_descriptor("group_unet"))) == 50488


def test_default_descriptor_layers():
    """The layers of both kinds, pinned: name, dense shape (c_out, c_in, k) and level, in execution order."""
    plain = [(c.name, c.c_out, c.c_in, c.kernel, c.level) for c in descriptor_topology(default_config()).convs]
    assert plain == [("enc0a", 16, 1, 3, 0), ("enc0b", 16, 16, 3, 0), ("enc1a", 32, 16, 3, 1), ("enc1b", 32, 32, 3, 1),
                     ("enc2a", 64, 32, 3, 2), ("enc2b", 64, 64, 3, 2), ("enc3a", 128, 64, 3, 3),
                     ("enc3b", 128, 128, 3, 3), ("dec0", 128, 192, 3, 2), ("head", 128, 128, 1, 2)]
    group = descriptor_topology(config_with(default_descriptor("group_unet")))
    assert [(c.name, c.c_out, c.c_in, c.level) for c in group.convs] == [
        ("enc0a", 24, 1, 0), ("enc0b", 24, 24, 0), ("enc1a", 48, 24, 1), ("enc1b", 48, 48, 1), ("enc2a", 96, 48, 2),
        ("enc2b", 96, 96, 2), ("enc3a", 192, 96, 3), ("enc3b", 192, 192, 3), ("dec0", 128, 288, 2),
        ("head", 128, 128, 2)]
    assert [c.name for c in group.convs if c.lifting] == ["enc0a"]
    assert group.stride == 4 and descriptor_topology(default_config()).stride == 4


@pytest.mark.parametrize("descriptor", [default_descriptor("unet"), default_descriptor("group_unet"), SMALL_GROUP,
                                        SMALL_PLAIN, NO_DECODER])
def test_descriptor_steps_chain(descriptor):
    """Walking the steps: every convolution runs at the level the walk stands at and takes the channels it
    holds; a pooling goes one level down; a decoder stage one level up, with a map kept there earlier; the head
    (1x1, no ReLU) gives `dim` channels, then the L2 normalisation."""
    cfg = config_with(descriptor)
    topo = descriptor_topology(cfg)
    level, channels, kept = 0, 1, {}
    for step in topo.steps:
        if isinstance(step, Pool):
            assert step.level == level + 1
            level = step.level
        elif isinstance(step, KeepSkip):
            assert step.level == level
            kept[step.level] = channels
        elif isinstance(step, UpsampleConcat):
            assert step.skip == level - 1
            level = step.skip
            channels += kept[step.skip]
        elif isinstance(step, DescConv):
            assert (step.level, step.c_in) == (level, channels), step.name
            channels = step.c_out
    head = topo.convs[-1]
    assert isinstance(topo.steps[-1], L2Normalize) and topo.steps[-2] == head
    assert (head.name, head.kernel, head.relu, channels) == ("head", 1, False, descriptor["dim"])
    assert all(c.relu for c in topo.convs[:-1])
    assert topo.out_level == level == len(descriptor["encoder"]) - 1 - len(descriptor["decoder"])
    assert sum(isinstance(s, Pool) for s in topo.steps) == len(descriptor["encoder"]) - 1
    assert len(kept) == sum(isinstance(s, UpsampleConcat) for s in topo.steps) == len(descriptor["decoder"])


def test_detector_layers():
    topo = detector_topology(default_config())
    assert [(c.c_out, c.c_in, c.kernel, c.relu) for c in topo.convs] == [(16, 1, 5, True)] + [(16, 16, 5, True)] * 5 + [
        (8, 16, 5, False)]
    assert [c.lifting for c in topo.convs] == [True] + [False] * 6
    assert topo.receptive_field == 29
    det = Detector(default_config())
    assert len(det.convs) == 7 and len(det.norms) == 6
    with pytest.raises(ValueError, match="one regular field"):
        detector_topology(default_config(detector={"kernel": 5, "fields": [2, 2]}))


@pytest.mark.parametrize("descriptor", [default_descriptor("unet"), SMALL_GROUP, SMALL_PLAIN, NO_DECODER])
def test_modules_reference_and_export_walk_the_same_steps(descriptor):
    """The exported dense tensors are named by the steps, and the reference walk over them reproduces the training
    modules' walk at odd sizes (floor or ceil halving, the upsampling to the skip's size)."""
    cfg = config_with(descriptor)
    det, desc = random_models(cfg)
    tensors = {k: v.double() for k, v in export.export_tensors(det.float(), desc.float()).items()}
    det, desc = det.double(), desc.double()
    assert sorted(tensors) == sorted(expected_tensor_names(cfg))
    x = torch.randn(1, 1, 45, 37, dtype=torch.float64)
    with torch.no_grad():
        dmap, logits = desc(x), det(x)
    assert tuple(dmap.shape[-2:]) == output_size(desc.topology, 45, 37)
    assert (descriptor_forward(tensors, cfg, x) - dmap).abs().max() < 1e-5
    assert (detector_forward(tensors, cfg, x) - logits).abs().max() < 1e-5 * logits.abs().max()


def test_reference_walk_is_exact_under_quarter_turns():
    """The group kind through the dense walk: a quarter turn of the image turns every map and moves group channel r
    to r + N/4, exactly, at an odd size (ceil halving keeps the grids centred)."""
    cfg = config_with(dict(SMALL_GROUP, dim=16))
    n = cfg["group_order"]
    det, desc = random_models(cfg, seed=4)
    tensors = {k: v.double() for k, v in export.export_tensors(det.float(), desc.float()).items()}
    x = torch.randn(1, 1, 41, 35, dtype=torch.float64)
    for forward in (descriptor_forward, detector_forward):
        out, turned = forward(tensors, cfg, x)[0], forward(tensors, cfg, rot90(x))[0]
        c = torch.arange(out.shape[0])
        moved = (c // n) * n + (c % n + n // 4) % n
        assert (turned[moved] - rot90(out)).abs().max() < 1e-12, forward.__name__


def load_strek_torch():
    path = Path(__file__).resolve().parents[2] / "gpu" / "strek_torch.py"
    spec = importlib.util.spec_from_file_location("strek_torch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_comparison_model_walks_the_shared_steps():
    """tools/gpu/strek_torch.py takes its layers and the U-Net walk from here: on the same float32 tensors, its
    detector and descriptor give exactly the reference's outputs."""
    strek_torch = load_strek_torch()
    cfg = config_with(SMALL_PLAIN)
    det, desc = random_models(cfg, seed=2)
    tensors = export.export_tensors(det.float(), desc.float())
    model = strek_torch.StrekTorch(cfg, tensors, (40, 36), max_keypoints=10)
    x = torch.randn(1, 1, 36, 40)
    with torch.no_grad():
        assert torch.equal(model.descriptor(x), descriptor_forward(tensors, cfg, x))
        assert torch.equal(model.detector(x), detector_forward(tensors, cfg, x))
    group = config_with(SMALL_GROUP)
    det, desc = random_models(group)
    with pytest.raises(ValueError, match="version 1"):
        strek_torch.StrekTorch(group, export.export_tensors(det.float(), desc.float()), (40, 36))
