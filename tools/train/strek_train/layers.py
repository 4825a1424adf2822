"""C_N-equivariant layers on regular fields: lifting and group convolutions, field batch norm, orientation pooling.

Channel layout (docs/model.md): a regular field is N consecutive channels, channel f*N + r is group element r.
Every convolution is parametrised by coefficients on the steerable basis (basis.py) and expanded, at each forward,
into the dense cross-correlation filter that the engine runs; `export()` returns exactly that dense filter.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .basis import BasisSpec, complete_by_rot90, quarter_angles, sample_basis


class _SteerableConv(nn.Module):
    """Shared parts of the lifting and group convolutions: the sampled basis and the per-field bias."""

    def __init__(self, group_order: int, fields_out: int, spec: BasisSpec):
        super().__init__()
        if group_order % 4:
            raise ValueError(f"group order {group_order} is not divisible by 4")
        self.group_order = group_order
        self.fields_out = fields_out
        self.spec = spec
        self.register_buffer("basis", self._basis(0.0), persistent=False)
        self.bias = nn.Parameter(torch.zeros(fields_out))

    def _basis(self, theta: float) -> torch.Tensor:
        """[N/4, nb, k, k]: the basis at the angles of the first quarter of the group, offset by theta."""
        return torch.from_numpy(sample_basis(self.spec, quarter_angles(self.group_order, theta))).float()

    def basis_at(self, theta: float) -> torch.Tensor:
        if theta == 0.0:
            return self.basis
        return self._basis(theta).to(self.basis.device, self.basis.dtype)

    def expanded_bias(self) -> torch.Tensor:
        # One bias per field, constant over its N channels: a channel-dependent bias would break equivariance.
        return self.bias.repeat_interleave(self.group_order)

    def forward(self, x: torch.Tensor, theta: float = 0.0) -> torch.Tensor:
        # Valid padding: zero padding would make the border depend on the orientation of the image content.
        return F.conv2d(x, self.filters(theta), self.expanded_bias())

    def export(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The dense filter [C_out, C_in, k, k] and bias [C_out] that this layer applies."""
        return self.filters().detach().clone(), self.expanded_bias().detach().clone()


class LiftConv(_SteerableConv):
    """Scalar image (1 channel) -> `fields_out` regular fields.

    W[f*N + r, 0] = psi_f rotated by r * 2pi/N, psi_f a combination of the basis."""

    def __init__(self, group_order: int, fields_out: int, spec: BasisSpec):
        super().__init__(group_order, fields_out, spec)
        nb = spec.size
        # He-like init: the expanded filter of unit-norm basis functions has energy sum(w^2).
        self.weight = nn.Parameter(torch.randn(fields_out, nb) * math.sqrt(2.0 / nb))

    def filters(self, theta: float = 0.0) -> torch.Tensor:
        """Dense filter [F*N, 1, k, k]; theta rotates every filter further (used by the 45-degree tests)."""
        b = self.basis_at(theta).to(self.weight.dtype)
        quarter = torch.einsum("fn,rnyx->fryx", self.weight, b)  # [F, N/4, k, k]
        full = complete_by_rot90(quarter, group_axis=1, shift_axis=None)  # [F, N, k, k]
        k = self.spec.kernel
        return full.reshape(self.fields_out * self.group_order, 1, k, k)


class GroupConv(_SteerableConv):
    """`fields_in` regular fields -> `fields_out` regular fields.

    W[g*N + r, f*N + s] = (psi_{g,f,(s-r) mod N}) rotated by r * 2pi/N: the filter of output element r is the base
    filter rotated spatially and shifted cyclically along the input group axis."""

    def __init__(self, group_order: int, fields_in: int, fields_out: int, spec: BasisSpec, gain: float = 2.0):
        super().__init__(group_order, fields_out, spec)
        self.fields_in = fields_in
        nb = spec.size
        std = math.sqrt(gain / (fields_in * group_order * nb))
        self.weight = nn.Parameter(torch.randn(fields_out, fields_in, group_order, nb) * std)

    def filters(self, theta: float = 0.0) -> torch.Tensor:
        n = self.group_order
        b = self.basis_at(theta).to(self.weight.dtype)  # [N/4, nb, k, k]
        # shifted[g, f, r, s, :] = weight[g, f, (s - r) mod N, :]
        s_idx = (torch.arange(n)[None, :] - torch.arange(n // 4)[:, None]) % n  # [N/4, N]
        shifted = self.weight[:, :, s_idx.to(self.weight.device), :]  # [G, F, N/4, N, nb]
        quarter = torch.einsum("gfrsn,rnyx->grfsyx", shifted, b)  # [G, N/4, F, N, k, k]
        full = complete_by_rot90(quarter, group_axis=1, shift_axis=3)  # [G, N, F, N, k, k]
        k = self.spec.kernel
        return full.reshape(self.fields_out * n, self.fields_in * n, k, k)


class FieldBatchNorm(nn.Module):
    """Batch norm whose statistics and affine parameters are shared by the N channels of each field."""

    def __init__(self, group_order: int, fields: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True):
        super().__init__()
        self.group_order, self.fields, self.eps, self.momentum = group_order, fields, eps, momentum
        # affine=False: a pure per-field standardisation (the descriptor head uses it against collapse).
        self.weight = nn.Parameter(torch.ones(fields)) if affine else None
        self.bias = nn.Parameter(torch.zeros(fields)) if affine else None
        self.register_buffer("running_mean", torch.zeros(fields))
        self.register_buffer("running_var", torch.ones(fields))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # [B, F*N, H, W] viewed as [B, F, N*H, W]: the standard batch norm over that view shares its statistics
        # (and its affine parameters) over the N channels of each field.
        y = F.batch_norm(x.reshape(b, self.fields, self.group_order * h, w), self.running_mean, self.running_var,
                         self.weight, self.bias, self.training, self.momentum, self.eps)
        return y.reshape(b, c, h, w)

    def fold(self, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Folds the running statistics into the preceding convolution (eval-mode semantics).

        The scale is one number per field, so the folded filter keeps the exact 90-degree structure."""
        gamma = self.weight if self.weight is not None else torch.ones_like(self.running_var)
        beta = self.bias if self.bias is not None else torch.zeros_like(self.running_mean)
        scale = (gamma / torch.sqrt(self.running_var + self.eps)).detach()
        shift = (beta - self.running_mean * scale).detach()
        scale_c = scale.repeat_interleave(self.group_order).to(weight.dtype)
        shift_c = shift.repeat_interleave(self.group_order).to(weight.dtype)
        return weight * scale_c[:, None, None, None], bias * scale_c + shift_c


def orientation_pool(group_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Score and orientation from one regular field [..., N, H, W] (docs/model.md, "Orientation pooling").

    score = max over the N channels; orientation = (r* + t) * 2pi/N mod 2pi with r* the first argmax and t the
    vertex of the parabola through the neighbouring bins, clamped to [-0.5, 0.5] (0 when the parabola is not
    concave)."""
    n = group_logits.shape[-3]
    score = group_logits.max(dim=-3).values
    # The first argmax, explicitly: ties must resolve the same way in the engine.
    bins = torch.arange(n, device=group_logits.device).view(n, 1, 1)
    r_star = torch.where(group_logits == score.unsqueeze(-3), bins, n).min(dim=-3).values
    idx = r_star.unsqueeze(-3)
    a = group_logits.gather(-3, (idx - 1) % n).squeeze(-3)
    c = group_logits.gather(-3, (idx + 1) % n).squeeze(-3)
    b = score
    d = a - 2 * b + c
    safe_d = torch.where(d < 0, d, torch.ones_like(d))
    t = torch.where(d < 0, (0.5 * (a - c) / safe_d).clamp(-0.5, 0.5), torch.zeros_like(d))
    theta = torch.remainder((r_star.to(group_logits.dtype) + t) * (2 * math.pi / n), 2 * math.pi)
    return score, theta
