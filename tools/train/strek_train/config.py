"""The model configuration of docs/model.md (`strek.config`) and the budgets derived from it."""
from __future__ import annotations

import copy
from dataclasses import dataclass

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


def receptive_field(cfg: dict) -> int:
    det = cfg["detector"]
    return len(det["fields"]) * (det["kernel"] - 1) + 1


def heatmap_margin(cfg: dict) -> int:
    """Heatmap pixel (hx, hy) is centred on input pixel (hx + margin, hy + margin)."""
    return (receptive_field(cfg) - 1) // 2


def detector_macs_per_pixel(cfg: dict) -> int:
    n, k = cfg["group_order"], cfg["detector"]["kernel"]
    c_in, macs = 1, 0
    for f in cfg["detector"]["fields"]:
        macs += c_in * f * n * k * k
        c_in = f * n
    return macs


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
    """One descriptor convolution: dense shape (c_out, c_in, kernel), the pyramid level it runs at (0 = full
    resolution), whether a ReLU follows, and for the group kind its widths in fields (fields_in None: lifting)."""
    name: str
    c_out: int
    c_in: int
    kernel: int
    level: int
    relu: bool
    fields_out: int | None = None
    fields_in: int | None = None

    @property
    def lifting(self) -> bool:
        return self.fields_out is not None and self.fields_in is None


@dataclass(frozen=True)
class DescriptorTopology:
    """Everything the trainer, the reference forward and the export derive from `cfg["descriptor"]`."""
    kind: str
    group_order: int
    levels: int  # encoder levels E
    decoders: int  # decoder stages D (each one level up)
    dim: int
    convs: tuple[DescConv, ...]

    @property
    def out_level(self) -> int:
        return self.levels - 1 - self.decoders

    @property
    def stride(self) -> int:
        return 2**self.out_level

    @property
    def group(self) -> bool:
        return self.kind == "group_unet"

    def conv(self, name: str) -> DescConv:
        return next(c for c in self.convs if c.name == name)


def descriptor_topology(cfg: dict) -> DescriptorTopology:
    """The one place where a descriptor config becomes layers (docs/model.md, "Descriptor"; README, group kind).

    Execution order: enc<l>a, enc<l>b for l = 0..E-1 (level l), then dec<m> for m = 0..D-1 (level E-2-m; input:
    the upsampled map first, then the skip e_{E-2-m}), then the 1x1 `head` (no ReLU)."""
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

    def conv(name, f_out, f_in, kernel, level, relu):
        c_in = 1 if f_in is None else f_in * n
        if not group:
            return DescConv(name, f_out, c_in, kernel, level, relu)
        return DescConv(name, f_out * n, c_in, kernel, level, relu, f_out, f_in)

    convs, f_in = [], None
    for level, f in enumerate(enc):
        convs.append(conv(f"enc{level}a", f, f_in, k, level, True))
        convs.append(conv(f"enc{level}b", f, f, k, level, True))
        f_in = f
    for m, f in enumerate(dec):
        level = len(enc) - 2 - m
        convs.append(conv(f"dec{m}", f, f_in + enc[level], k, level, True))
        f_in = f
    convs.append(conv("head", head, f_in, 1, len(enc) - 1 - len(dec), False))
    if not group:  # the plain U-Net's input is one channel, not a field
        convs[0] = DescConv(convs[0].name, convs[0].c_out, 1, k, 0, True)
    return DescriptorTopology(kind, n, len(enc), len(dec), d["dim"], tuple(convs))


def descriptor_stride(cfg: dict) -> int:
    return descriptor_topology(cfg).stride


def descriptor_convs(cfg: dict) -> list[tuple[str, int, int, int, int]]:
    """(name, c_out, c_in, kernel, level) of every descriptor convolution, in execution order."""
    return [(c.name, c.c_out, c.c_in, c.kernel, c.level) for c in descriptor_topology(cfg).convs]


def descriptor_macs_per_pixel(cfg: dict) -> float:
    """Multiply-adds per full-resolution input pixel, every convolution counted at its level (1/4 per level)."""
    return sum(co * ci * k * k / 4**level for _, co, ci, k, level in descriptor_convs(cfg))
