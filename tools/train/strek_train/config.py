"""The model configuration of docs/model.md (`strek.config`) and the budgets derived from it."""
from __future__ import annotations

import copy

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


def descriptor_stride(cfg: dict) -> int:
    d = cfg["descriptor"]
    return 2 ** (len(d["encoder"]) - 1 - len(d["decoder"]))


def detector_macs_per_pixel(cfg: dict) -> int:
    n, k = cfg["group_order"], cfg["detector"]["kernel"]
    c_in, macs = 1, 0
    for f in cfg["detector"]["fields"]:
        macs += c_in * f * n * k * k
        c_in = f * n
    return macs


def descriptor_convs(cfg: dict) -> list[tuple[str, int, int, int, int]]:
    """(name, c_out, c_in, kernel, level) of every descriptor convolution, in execution order."""
    d = cfg["descriptor"]
    k, enc, dec = d["kernel"], d["encoder"], d["decoder"]
    convs, c_in = [], 1
    for level, c in enumerate(enc):
        convs.append((f"enc{level}a", c, c_in, k, level))
        convs.append((f"enc{level}b", c, c, k, level))
        c_in = c
    for m, c in enumerate(dec):
        level = len(enc) - 2 - m
        convs.append((f"dec{m}", c, c_in + enc[level], k, level))
        c_in = c
    convs.append(("head", d["dim"], c_in, 1, len(enc) - 1 - len(dec)))
    return convs


def descriptor_macs_per_pixel(cfg: dict) -> float:
    return sum(co * ci * k * k / 4**level for _, co, ci, k, level in descriptor_convs(cfg))
