"""The S-TREK detector: C_N-equivariant CNN, valid padding, one regular field out, orientation pooling."""
from __future__ import annotations

import torch
import torch.nn as nn

from .basis import BasisSpec
from .config import DETECTOR_MAC_BUDGET, detector_topology
from .layers import FieldBatchNorm, GroupConv, LiftConv, orientation_pool


class Detector(nn.Module):
    """Layers conv -> field batch norm -> ReLU, the last one conv only (its output is the logit field).

    `logit_gain` multiplies the last layer's output and is folded into the exported filter.  Training samples from
    softmax(logits / T) with T = 0.01; with the gain set to T the raw network output starts at unit scale, so the
    sampler starts close to uniform (exploration) and Adam's step size is sensible for the last layer too."""

    def __init__(self, cfg: dict, logit_gain: float = 1.0, spec: BasisSpec | None = None):
        super().__init__()
        self.cfg = cfg
        self.topology = detector_topology(cfg)
        n = self.topology.group_order
        spec = spec or BasisSpec(kernel=self.topology.kernel)
        self.group_order, self.logit_gain, self.spec = n, logit_gain, spec
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()  # one per layer with a ReLU: all but the last
        for layer in self.topology.convs:
            if layer.lifting:
                self.convs.append(LiftConv(n, layer.fields_out, spec))
            else:
                gain = 2.0 if layer.relu else 1.0  # the last layer gets a unit-gain init: no ReLU follows it
                self.convs.append(GroupConv(n, layer.fields_in, layer.fields_out, spec, gain=gain))
            if layer.relu:
                self.norms.append(FieldBatchNorm(n, layer.fields_out))

    @property
    def receptive_field(self) -> int:
        return self.topology.receptive_field

    def forward(self, x: torch.Tensor, theta: float = 0.0) -> torch.Tensor:
        """x [B, 1, H, W] normalised gray -> group logits [B, N, H-R+1, W-R+1].

        theta != 0 rotates every filter by theta (the continuous-rotation tests)."""
        for layer, conv in zip(self.topology.convs, self.convs):
            x = conv(x, theta)
            if layer.relu:
                x = torch.relu(self.norms[layer.index](x))
        return x * self.logit_gain

    def heatmap(self, x: torch.Tensor) -> torch.Tensor:
        """Score logits [B, H', W'] (max over the group channels)."""
        return self.forward(x).max(dim=1).values

    def score_and_orientation(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return orientation_pool(self.forward(x))

    def export(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Dense (weight, bias) per layer with batch norm and the logit gain folded in."""
        layers = []
        for layer, conv in zip(self.topology.convs, self.convs):
            w, b = conv.export()
            if layer.relu:
                w, b = self.norms[layer.index].fold(w, b)
            else:  # the last layer: its output is the logits
                w, b = w * self.logit_gain, b * self.logit_gain
            layers.append((w, b))
        return layers


def describe_budget(cfg: dict) -> str:
    topo = detector_topology(cfg)
    macs = topo.macs_per_pixel
    verdict = "within" if macs <= DETECTOR_MAC_BUDGET else "OVER"
    return (f"detector: C{topo.group_order}, {len(topo.convs)} layers {topo.kernel}x{topo.kernel}, receptive field "
            f"{topo.receptive_field}, {macs} MAC/px ({verdict} the {DETECTOR_MAC_BUDGET} budget)")


if __name__ == "__main__":
    from .config import default_config

    print(describe_budget(default_config()))
