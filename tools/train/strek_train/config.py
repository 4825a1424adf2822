"""The model configuration of docs/model.md (`strek.config`) and the budgets derived from it."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Union

DEFAULT_CONFIG = {
    "group_order": 8,
    "input": {"mean": 0.5, "std": 0.25},
    "detector": {"kernel": 5, "fields": [2, 2, 2, 2, 2, 2, 1]},
    "descriptor": {"kind": "unet", "kernel": 3, "encoder": [16, 32, 64, 128], "decoder": [128], "dim": 128},
    "inference": {
        "scales": [1.0, 0.707, 0.5, 0.354, 0.25],
        "min_level_side": 128,
        "nms_radius": 1,
        "score_threshold": -1e30,
        "border": 0,
        "max_keypoints": 1000,
    },
}

DETECTOR_MAC_BUDGET = 40_000
DESCRIPTOR_MAC_BUDGET = 60_000


def default_config(**overrides) -> dict:
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


@dataclass(frozen=True)
class DetectorConv:
    """One detector layer: a valid cross-correlation from `fields_in` regular fields (None: the lifting layer on the
    gray image) to `fields_out` fields, N channels each.  All but the last are followed by field batch norm (in
    training) and a ReLU; the last one's single field is the group logits that orientation pooling reads."""
    index: int
    fields_out: int
    fields_in: int | None
    kernel: int
    group_order: int
    relu: bool

    @property
    def tensor_name(self) -> str:
        return f"detector.{self.index}"

    @property
    def lifting(self) -> bool:
        return self.fields_in is None

    @property
    def c_out(self) -> int:
        return self.fields_out * self.group_order

    @property
    def c_in(self) -> int:
        return 1 if self.fields_in is None else self.fields_in * self.group_order


@dataclass(frozen=True)
class DetectorTopology:
    """The detector's layers in execution order (docs/model.md, "Detector"), as every consumer walks them."""
    group_order: int
    kernel: int
    convs: tuple[DetectorConv, ...]

    @property
    def receptive_field(self) -> int:
        return len(self.convs) * (self.kernel - 1) + 1

    @property
    def macs_per_pixel(self) -> int:
        """Multiply-adds per heatmap pixel."""
        return sum(c.c_out * c.c_in * c.kernel * c.kernel for c in self.convs)


def detector_topology(cfg: dict) -> DetectorTopology:
    """The one place where a detector config becomes layers: a lifting layer, then group convolutions, the last
    one to a single regular field (the engine fuses it with orientation pooling)."""
    n, k, fields = cfg["group_order"], cfg["detector"]["kernel"], cfg["detector"]["fields"]
    if fields[-1] != 1:
        raise ValueError("the detector's last layer must output one regular field")
    fields_in = [None, *fields[:-1]]
    convs = tuple(DetectorConv(i, f_out, f_in, k, n, relu=i < len(fields) - 1)
                  for i, (f_out, f_in) in enumerate(zip(fields, fields_in)))
    return DetectorTopology(n, k, convs)


def receptive_field(cfg: dict) -> int:
    return detector_topology(cfg).receptive_field


def heatmap_margin(cfg: dict) -> int:
    """Heatmap pixel (hx, hy) is centred on input pixel (hx + margin, hy + margin)."""
    return (receptive_field(cfg) - 1) // 2


def detector_macs_per_pixel(cfg: dict) -> int:
    return detector_topology(cfg).macs_per_pixel


# Version 2 of the descriptor (kind "group_unet"): the U-Net built from C_N lifting and group convolutions.
# Widths are in regular fields (N channels each); the head's fields times N is the descriptor dimension.
GROUP_DESCRIPTOR = {"kind": "group_unet", "kernel": 3, "encoder": [3, 6, 12, 24], "decoder": [16], "head": 16,
                    "dim": 128}
DESCRIPTOR_KINDS = ("unet", "group_unet")


def default_descriptor(kind: str) -> dict:
    if kind == "unet":
        return copy.deepcopy(DEFAULT_CONFIG["descriptor"])
    if kind == "group_unet":
        return copy.deepcopy(GROUP_DESCRIPTOR)
    raise ValueError(f"descriptor kind {kind!r} is not one of {DESCRIPTOR_KINDS}")


@dataclass(frozen=True)
class DescConv:
    """Descriptor step: a convolution with zero "same" padding (kernel // 2) and a bias, dense shape (c_out, c_in,
    kernel), at pyramid level `level` (0 = full resolution), a ReLU after it when `relu`; for the group kind also
    its widths in fields (fields_in None: the lifting layer)."""
    name: str
    c_out: int
    c_in: int
    kernel: int
    level: int
    relu: bool
    fields_out: int | None = None
    fields_in: int | None = None

    @property
    def tensor_name(self) -> str:
        return f"descriptor.{self.name}"

    @property
    def lifting(self) -> bool:
        return self.fields_out is not None and self.fields_in is None

    @property
    def macs_per_pixel(self) -> float:
        """Multiply-adds per full-resolution input pixel: a level has a quarter of the pixels of the one below."""
        return self.c_out * self.c_in * self.kernel * self.kernel / 4**self.level


POOL_MEAN_2X2 = "mean_2x2"  # version 1: 2x2 mean, stride 2, floor (an odd last row / column is dropped)
POOL_BILINEAR_HALF = "bilinear_half"  # version 2: bilinear resize to (ceil(H/2), ceil(W/2)), see unet.py


@dataclass(frozen=True)
class Pool:
    """Descriptor step: down to `level` (half the size of level - 1) with the `mode` of the descriptor's kind."""
    level: int
    mode: str


@dataclass(frozen=True)
class KeepSkip:
    """Descriptor step: the current map (the encoder's output at `level`) is kept for an UpsampleConcat."""
    level: int


@dataclass(frozen=True)
class UpsampleConcat:
    """Descriptor step: bilinear resize (align_corners=False) to the size of the skip kept at `skip`, then the
    channels of the skip appended after the upsampled map's."""
    skip: int


@dataclass(frozen=True)
class L2Normalize:
    """Descriptor step: every pixel's vector divided by max(its L2 norm, 1e-12)."""


DescStep = Union[DescConv, Pool, KeepSkip, UpsampleConcat, L2Normalize]


@dataclass(frozen=True)
class DescriptorTopology:
    """Everything the trainer, the reference forward, the export and tools/gpu derive from `cfg["descriptor"]`:
    the steps in execution order, which every forward pass, shape and multiply-add count walks."""
    kind: str
    group_order: int
    dim: int
    steps: tuple[DescStep, ...]

    @property
    def convs(self) -> tuple[DescConv, ...]:
        return tuple(s for s in self.steps if isinstance(s, DescConv))

    @property
    def out_level(self) -> int:
        return self.convs[-1].level

    @property
    def stride(self) -> int:
        return 2**self.out_level

    @property
    def group(self) -> bool:
        return self.kind == "group_unet"

    @property
    def macs_per_pixel(self) -> float:
        return sum(c.macs_per_pixel for c in self.convs)


def descriptor_topology(cfg: dict) -> DescriptorTopology:
    """The one place where a descriptor config becomes steps (docs/model.md, "Descriptor"; README, group kind).

    Encoder level l = 0..E-1: Pool to l (l > 0), enc<l>a, enc<l>b (KeepSkip l when a decoder reads it).  Decoder
    stage m = 0..D-1 goes one level up: UpsampleConcat with the skip of that level, dec<m>.  Then the 1x1 `head`
    (no ReLU) and L2Normalize."""
    d = cfg["descriptor"]
    kind = d["kind"]
    if kind not in DESCRIPTOR_KINDS:
        raise ValueError(f"descriptor kind {kind!r} is not one of {DESCRIPTOR_KINDS}")
    k, enc, dec = d["kernel"], d["encoder"], d["decoder"]
    if len(dec) > len(enc) - 1:
        raise ValueError(f"descriptor: {len(dec)} decoder stages need more than {len(enc)} encoder levels")
    group = kind == "group_unet"
    n = cfg["group_order"] if group else 1
    head = d["head"] if group else d["dim"]
    if group and head * n != d["dim"]:
        raise ValueError(f"group descriptor: head {head} fields x N {n} != dim {d['dim']}")
    pool = POOL_BILINEAR_HALF if group else POOL_MEAN_2X2

    def conv(name, f_out, f_in, kernel, level, relu=True):
        c_in = 1 if f_in is None else f_in * n  # the image is one channel, not a field
        if not group:
            return DescConv(name, f_out, c_in, kernel, level, relu)
        return DescConv(name, f_out * n, c_in, kernel, level, relu, f_out, f_in)

    # Decoder stage m runs one level above the stage before it (the first one above the deepest encoder level) and
    # concatenates the encoder's map of its level.  This line is the only place that derives the skip index.
    skip_levels = [len(enc) - 2 - m for m in range(len(dec))]
    steps, f_in = [], None
    for level, f in enumerate(enc):
        if level > 0:
            steps.append(Pool(level, pool))
        steps += [conv(f"enc{level}a", f, f_in, k, level), conv(f"enc{level}b", f, f, k, level)]
        if level in skip_levels:
            steps.append(KeepSkip(level))
        f_in = f
    level = len(enc) - 1  # where the walk stands
    for m, f in enumerate(dec):
        level = skip_levels[m]
        steps += [UpsampleConcat(level), conv(f"dec{m}", f, f_in + enc[level], k, level)]
        f_in = f
    steps += [conv("head", head, f_in, 1, level, relu=False), L2Normalize()]
    return DescriptorTopology(kind, n, d["dim"], tuple(steps))


def descriptor_stride(cfg: dict) -> int:
    return descriptor_topology(cfg).stride


def descriptor_macs_per_pixel(cfg: dict) -> float:
    """Multiply-adds per full-resolution input pixel, every convolution counted at its level (1/4 per level)."""
    return descriptor_topology(cfg).macs_per_pixel
