"""The sequential keypoint sampler of S-TREK, vectorised over the batch.

Each step draws one keypoint per image from softmax(logits / T) restricted to the pixels not yet masked, then
masks a disk of `radius` around it.  An image stops when the probability mass (of the unmasked softmax) left on
its unmasked pixels falls under `mass_threshold`, or after `budget` draws.  The draws themselves run without
gradient; their log-probabilities are then computed in one differentiable pass."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass
class SamplerConfig:
    temperature: float = 0.01
    radius: float = 6.0
    mass_threshold: float = 0.02
    budget: int = 64
    # Soft bound of the sampled logits, in nats: logits / T -> bound * tanh(logits / (T * bound)); 0 disables it.
    # Without it the policy gradient sharpens softmax(logits / T) without limit: within a few dozen steps a handful
    # of peaks hold all the mass, the sampler stops drawing and stops exploring.  The bound is monotone, so the
    # exported (unbounded) logits rank keypoints exactly as the trained distribution does.
    logit_bound: float = 4.0

    def scaled_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The log-weights (up to a constant) of the sampling distribution: (bounded) logits / T."""
        z = logits / self.temperature
        return self.logit_bound * torch.tanh(z / self.logit_bound) if self.logit_bound > 0 else z

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Samples:
    xy: torch.Tensor  # [B, K, 2] long, heatmap pixel (x, y) of each draw
    valid: torch.Tensor  # [B, K] bool, the draw happened (the image had not stopped)
    log_prob: torch.Tensor  # [B, K] log-probability of each draw given the earlier ones (0 where not valid)

    @property
    def counts(self) -> torch.Tensor:
        return self.valid.sum(1)


def sample_keypoints(logits: torch.Tensor, cfg: SamplerConfig, generator: torch.Generator | None = None) -> Samples:
    """logits [B, H, W] (differentiable) -> Samples; the distribution is softmax(cfg.scaled_logits(logits)).

    Drawing from softmax over the available pixels is done with the Gumbel-max trick, with ONE Gumbel sample per
    pixel for the whole sequence: by the memorylessness of the exponential race, the argmax of z + G over the pixels
    still available after earlier draws (whatever they masked) is distributed as softmax(z) over those pixels.  So
    each step is an argmax and a local update of a disk, not a softmax and a multinomial over the whole image."""
    b, h, w = logits.shape
    dev = logits.device
    r = int(cfg.radius)
    hp, wp = h + 2 * r, w + 2 * r  # padded by the radius: a disk never leaves the grid, padding is never available
    z = cfg.scaled_logits(logits.detach())
    zpad = F.pad(z, (r, r, r, r), value=float("-inf")).reshape(b, hp * wp)
    p0 = torch.softmax(zpad, dim=1)
    u = torch.rand(zpad.shape, generator=generator, device=dev if generator is None else generator.device).to(dev)
    perturbed = zpad - torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))
    dy, dx = torch.meshgrid(torch.arange(-r, r + 1, device=dev), torch.arange(-r, r + 1, device=dev), indexing="ij")
    inside = dy**2 + dx**2 <= cfg.radius**2
    disk = (dy * wp + dx)[inside]  # flat offsets of the disk
    available = torch.isfinite(zpad)
    perturbed = perturbed.masked_fill(~available, float("-inf"))  # masked pixels are set to -inf as they go
    remaining = torch.ones(b, dtype=torch.float64, device=dev)  # softmax mass left on the available pixels
    # masked_at[p] = index of the draw that masked pixel p (budget if never): p is available to draws 0..masked_at.
    masked_at = torch.full((b, hp * wp), cfg.budget, dtype=torch.long, device=dev)
    rows = torch.arange(b, device=dev)[:, None].expand(b, len(disk))
    active = torch.ones(b, dtype=torch.bool, device=dev)
    idx = torch.zeros(b, cfg.budget, dtype=torch.long, device=dev)
    valid = torch.zeros(b, cfg.budget, dtype=torch.bool, device=dev)
    steps = 0
    for k in range(cfg.budget):
        active &= remaining >= cfg.mass_threshold
        if not bool(active.any()):
            break
        draw = perturbed.argmax(dim=1)
        idx[:, k], valid[:, k] = draw, active
        nb = draw[:, None] + disk[None]  # [B, disk]
        newly = available.gather(1, nb) & active[:, None]
        remaining -= (p0.gather(1, nb) * newly).sum(1, dtype=torch.float64)
        r_new, p_new = rows[newly], nb[newly]
        masked_at[r_new, p_new] = k
        available[r_new, p_new] = False
        perturbed[r_new, p_new] = float("-inf")
        steps = k + 1
    idx, valid = idx[:, :steps], valid[:, :steps]
    ys, xs = idx // wp - r, idx % wp - r
    idx_plain = ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1)
    masked_plain = masked_at.reshape(b, hp, wp)[:, r:r + h, r:r + w].reshape(b, h * w)
    log_prob = draw_log_probs(cfg.scaled_logits(logits).reshape(b, h * w), idx_plain, masked_plain, steps)
    return Samples(xy=torch.stack([xs, ys], dim=-1), valid=valid, log_prob=log_prob * valid)


def draw_log_probs(z: torch.Tensor, idx: torch.Tensor, masked_at: torch.Tensor, steps: int) -> torch.Tensor:
    """log p(draw k) = z[idx_k] - log sum_{p available at k} exp(z_p), for all k at once.

    Pixel p is available to draws 0..masked_at[p], so the normaliser of draw k is the suffix sum over j >= k of
    hist[j] = sum of exp(z_p) over pixels with masked_at[p] == j: O(B * pixels) memory, sums of positive terms only."""
    b = z.shape[0]
    zmax = z.detach().max(dim=1, keepdim=True).values
    e = torch.exp(z - zmax)
    slot = masked_at.clamp(max=steps)  # never masked within the run: available to every draw
    hist = torch.zeros(b, steps + 1, dtype=z.dtype, device=z.device).scatter_add(1, slot, e)
    suffix = hist.flip(1).cumsum(1).flip(1)[:, :steps]
    return z.gather(1, idx) - zmax - torch.log(suffix.clamp_min(torch.finfo(z.dtype).tiny))


def log_probs_of(logits: torch.Tensor, xy: torch.Tensor, valid: torch.Tensor, cfg: SamplerConfig) -> torch.Tensor:
    """Log-probabilities of a given sequence of draws (xy [B, K, 2], valid [B, K]) under logits [B, H, W]: the
    masks are rebuilt from the draws.  Same values as `sample_keypoints` returns; used to re-score fixed draws."""
    b, h, w = logits.shape
    k = xy.shape[1]
    ys = torch.arange(h, device=logits.device).repeat_interleave(w)
    xs = torch.arange(w, device=logits.device).repeat(h)
    d2 = (xs[None, None] - xy[..., :1]) ** 2 + (ys[None, None] - xy[..., 1:]) ** 2  # [B, K, P]
    covers = (d2 <= cfg.radius**2) & valid[..., None]
    first = torch.where(covers.any(1), covers.float().argmax(1), torch.full_like(ys, k)[None].expand(b, -1))
    idx = xy[..., 1] * w + xy[..., 0]
    return draw_log_probs(cfg.scaled_logits(logits).reshape(b, h * w), idx, first, k) * valid
