"""The S-TREK detector: C_N-equivariant CNN, valid padding, one regular field out, orientation pooling."""
from __future__ import annotations

import torch
import torch.nn as nn

from .basis import BasisSpec
from .config import DETECTOR_MAC_BUDGET, detector_macs_per_pixel, receptive_field
from .layers import FieldBatchNorm, GroupConv, LiftConv, orientation_pool


class Detector(nn.Module):
    """Layers conv -> field batch norm -> ReLU, the last one conv only (its output is the logit field).

    `logit_gain` multiplies the last layer's output and is folded into the exported filter.  Training samples from
    softmax(logits / T) with T = 0.01; with the gain set to T the raw network output starts at unit scale, so the
    sampler starts close to uniform (exploration) and Adam's step size is sensible for the last layer too."""

    def __init__(self, cfg: dict, logit_gain: float = 1.0, spec: BasisSpec | None = None):
        super().__init__()
        self.cfg = cfg
        n, k, fields = cfg["group_order"], cfg["detector"]["kernel"], cfg["detector"]["fields"]
        if fields[-1] != 1:
            raise ValueError("the detector's last layer must output one regular field")
        spec = spec or BasisSpec(kernel=k)
        self.group_order, self.logit_gain, self.spec = n, logit_gain, spec
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        f_in = None
        for i, f in enumerate(fields):
            last = i == len(fields) - 1
            # The last layer gets a unit-gain init: no ReLU follows it.
            conv = LiftConv(n, f, spec) if f_in is None else GroupConv(n, f_in, f, spec, gain=1.0 if last else 2.0)
            self.convs.append(conv)
            if not last:
                self.norms.append(FieldBatchNorm(n, f))
            f_in = f

    @property
    def receptive_field(self) -> int:
        return receptive_field(self.cfg)

    def forward(self, x: torch.Tensor, theta: float = 0.0) -> torch.Tensor:
        """x [B, 1, H, W] normalised gray -> group logits [B, N, H-R+1, W-R+1].

        theta != 0 rotates every filter by theta (the continuous-rotation tests)."""
        for i, conv in enumerate(self.convs):
            x = conv(x, theta)
            if i < len(self.norms):
                x = torch.relu(self.norms[i](x))
        return x * self.logit_gain

    def heatmap(self, x: torch.Tensor) -> torch.Tensor:
        """Score logits [B, H', W'] (max over the group channels)."""
        return self.forward(x).max(dim=1).values

    def score_and_orientation(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return orientation_pool(self.forward(x))

    def export(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Dense (weight, bias) per layer with batch norm and the logit gain folded in."""
        layers = []
        for i, conv in enumerate(self.convs):
            w, b = conv.export()
            if i < len(self.norms):
                w, b = self.norms[i].fold(w, b)
            else:
                w, b = w * self.logit_gain, b * self.logit_gain
            layers.append((w, b))
        return layers


def describe_budget(cfg: dict) -> str:
    macs = detector_macs_per_pixel(cfg)
    verdict = "within" if macs <= DETECTOR_MAC_BUDGET else "OVER"
    return (f"detector: C{cfg['group_order']}, {len(cfg['detector']['fields'])} layers {cfg['detector']['kernel']}x"
            f"{cfg['detector']['kernel']}, receptive field {receptive_field(cfg)}, {macs} MAC/px "
            f"({verdict} the {DETECTOR_MAC_BUDGET} budget)")


if __name__ == "__main__":
    from .config import default_config

    print(describe_budget(default_config()))
