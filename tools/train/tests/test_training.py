"""The sampler, the reward and a few training steps on a tiny synthetic set."""
import numpy as np
import torch

from strek_train.config import default_config, heatmap_margin
from strek_train.data import PairConfig, PairSource, synthetic_image
from strek_train.descriptor import Descriptor, sample_descriptors
from strek_train.detector import Detector
from strek_train.losses import hardest_negative_triplet_loss
from strek_train.reward import (RewardConfig, localisation_loss, parabola_offsets, reinforce_loss,
                                repeatability_rewards, reproject)
from strek_train.sampler import SamplerConfig, log_probs_of, sample_keypoints


def tiny_source(size=64, count=4, seed=0):
    cfg = default_config()
    rng = np.random.default_rng(seed)
    images = [synthetic_image(rng, 120, 140) for _ in range(count)]
    return PairSource(images, PairConfig(size=size), cfg, seed=seed), cfg


def test_sampler_log_probs_and_masks():
    torch.manual_seed(0)
    logits = torch.randn(3, 30, 40, dtype=torch.float64) * 0.02
    cfg = SamplerConfig(radius=4.0, budget=12, mass_threshold=0.0, logit_bound=3.0)
    s = sample_keypoints(logits, cfg, torch.Generator().manual_seed(1))
    assert s.valid.all() and s.xy.shape == (3, 12, 2)
    # No draw lies within the radius of an earlier one.
    d = torch.cdist(s.xy.double(), s.xy.double()) + torch.eye(12, dtype=torch.float64) * 100
    assert d.min() > cfg.radius
    # Log-probabilities equal the naive sequential computation.
    z = cfg.scaled_logits(logits).reshape(3, -1)
    xs, ys = torch.arange(40).repeat(30), torch.arange(30).repeat_interleave(40)
    for b in range(3):
        avail = torch.ones(1200, dtype=torch.bool)
        for k in range(12):
            x, y = s.xy[b, k]
            naive = z[b, y * 40 + x] - torch.logsumexp(z[b][avail], 0)
            assert abs(naive - s.log_prob[b, k]) < 1e-9
            avail &= (xs - x) ** 2 + (ys - y) ** 2 > cfg.radius**2
    assert torch.allclose(log_probs_of(logits, s.xy, s.valid, cfg), s.log_prob, atol=1e-12)


def test_sampler_stops_on_mass_and_draws_from_softmax():
    lg = torch.log(torch.tensor([0.2, 0.3, 0.5]))[None, None].repeat(4000, 1, 1) * 0.01
    cfg = SamplerConfig(radius=0.5, budget=3, mass_threshold=0.45, logit_bound=0.0)
    s = sample_keypoints(lg, cfg, torch.Generator().manual_seed(3))
    freq = torch.bincount(s.xy[:, 0, 0], minlength=3).double() / 4000
    assert torch.allclose(freq, torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64), atol=0.03)
    # Two draws leave 0.3 or 0.2 of the mass (< 0.45: stop), or 0.5 when the two smallest were drawn (a third draw).
    smallest_first = (s.xy[:, :2, 0] != 2).all(1)
    assert torch.equal(s.counts, torch.where(smallest_first, 3, 2))


def test_reward_of_a_perfect_detector():
    # Image 2 is image 1 shifted by (3, -2): points that reproject onto each other are all rewarded.
    h12 = torch.tensor([[[1.0, 0, 3], [0, 1, -2], [0, 0, 1]]], dtype=torch.float64)
    xy1 = torch.tensor([[[10, 10], [20, 5], [1, 1]]])
    xy2 = torch.tensor([[[13, 8], [23, 3], [30, 20]]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    (r1, m1), (r2, m2) = repeatability_rewards(xy1, valid, xy2, valid, h12, 14, (32, 32), RewardConfig())
    assert r1.tolist() == [[1.0, 1.0, 0.0]] and m1.tolist() == [[True, True, False]]  # (1,1) -> (4,-1): not visible
    assert r2.tolist() == [[1.0, 1.0, -0.5]]


def test_precise_repeats_earn_the_bonus():
    # Image 2 is image 1 shifted by (3, -2); its first point lands exactly, its second 2 px off (repeated at 3 px but
    # not at 1.5 px), its third 5 px off (not repeated).
    h12 = torch.tensor([[[1.0, 0, 3], [0, 1, -2], [0, 0, 1]]], dtype=torch.float64)
    xy1 = torch.tensor([[[10, 10], [20, 5], [5, 20]]])
    xy2 = torch.tensor([[[13, 8], [25, 3], [8, 23]]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    cfg = RewardConfig(precise_distance=1.5, precise_bonus=0.5)
    (r1, _), (r2, _) = repeatability_rewards(xy1, valid, xy2, valid, h12, 14, (32, 32), cfg)
    assert r1.tolist() == [[1.5, 1.0, -0.5]]
    assert r2.tolist() == [[1.5, 1.0, -0.5]]


def test_parabola_offsets_find_the_vertex_of_a_sampled_paraboloid():
    # Scores -((x - 5.3)^2 + 2 (y - 3.8)^2) sampled on a 9 x 7 grid: the pixel maximum is (5, 4); the refinement
    # lands on the vertex exactly; a border pixel and a convex spot are not moved.
    ys, xs = torch.meshgrid(torch.arange(7.0), torch.arange(9.0), indexing="ij")
    heat = -((xs - 5.3) ** 2 + 2 * (ys - 3.8) ** 2)
    xy = torch.tensor([[[5, 4], [0, 3], [8, 6]]])
    off = parabola_offsets(heat[None].double(), xy)
    assert torch.allclose(off[0, 0], torch.tensor([0.3, -0.2], dtype=torch.float64))
    assert off[0, 1, 0] == 0 and off[0, 2].tolist() == [0.0, 0.0]
    assert parabola_offsets(-heat[None], xy)[0, 0].tolist() == [0.0, 0.0]


def test_localisation_loss_pulls_refined_repeats_together():
    # Image 2 is image 1 shifted by (2, 1) with the peak 0.3 px off in x: one pair, 0.3 px apart after refinement.
    # A gradient step on the scores reduces that distance.
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    heat1 = -((xs - 6.0) ** 2 + (ys - 6.0) ** 2)
    heat2 = (-((xs - 8.3) ** 2 + (ys - 7.0) ** 2)).requires_grad_()
    h12 = torch.tensor([[[1.0, 0, 2], [0, 1, 1], [0, 0, 1]]], dtype=torch.float64)
    xy1, xy2 = torch.tensor([[[6, 6]]]), torch.tensor([[[8, 7]]])
    valid = torch.ones(1, 1, dtype=torch.bool)
    loss, stats = localisation_loss(heat1[None], xy1, valid, heat2[None], xy2, valid, h12, 0, 3.0)
    assert stats["loc_pairs"] == 2 and abs(stats["loc_before"]) < 1e-9 and abs(float(loss) - 0.3) < 1e-3
    loss.backward()
    with torch.no_grad():
        moved = heat2 - 0.1 * heat2.grad
    again, _ = localisation_loss(heat1[None], xy1, valid, moved[None], xy2, valid, h12, 0, 3.0)
    assert float(again) < float(loss) - 0.01


def test_detector_steps_reduce_the_policy_loss():
    """On a fixed tiny batch with fixed draws and rewards, a few Adam steps on the REINFORCE loss raise the
    log-probability of rewarded draws and lower that of penalised ones."""
    source, cfg = tiny_source()
    torch.manual_seed(0)
    det = Detector(cfg, logit_gain=0.01)
    v1, v2, h12 = source.batch(0, 2)
    scfg = SamplerConfig(budget=16)
    with torch.no_grad():
        heat = det(torch.cat([v1, v2])).max(1).values
    s = sample_keypoints(heat, scfg, torch.Generator().manual_seed(0))
    (r1, m1), (r2, m2) = repeatability_rewards(s.xy[:2], s.valid[:2], s.xy[2:], s.valid[2:], h12,
                                               heatmap_margin(cfg), tuple(heat.shape[-2:]), RewardConfig())
    rewards, masks = torch.cat([r1, r2]), torch.cat([m1, m2])
    baseline = float(rewards[masks].mean())

    def loss():
        lp = log_probs_of(det(torch.cat([v1, v2])).max(1).values, s.xy, s.valid, scfg)
        return reinforce_loss([lp], [rewards], [masks], baseline), lp

    opt = torch.optim.Adam(det.parameters(), lr=3e-3)
    first, lp0 = loss()
    for _ in range(5):
        opt.zero_grad()
        loss()[0].backward()
        opt.step()
    last, lp1 = loss()
    assert last < first
    gain = (lp1 - lp0).detach()
    assert gain[masks & (rewards > baseline)].mean() > gain[masks & (rewards < baseline)].mean()


def test_descriptor_steps_reduce_the_triplet_loss():
    source, cfg = tiny_source(size=64)
    torch.manual_seed(0)
    desc = Descriptor(cfg)
    v1, v2, h12 = source.batch(0, 2)
    rng = np.random.default_rng(0)
    batch = []
    for i in range(2):
        xy = torch.from_numpy(rng.uniform(4, 59, (24, 2)))
        p, vis = reproject(xy[None] - 14, h12[i][None], 14, (36, 36))  # keep points that land inside view 2
        batch.append((xy[vis[0]].float(), p[0][vis[0]].float() + 14))

    def loss():
        d = desc(torch.cat([v1, v2]))
        a = torch.cat([sample_descriptors(d[i], xy, desc.stride) for i, (xy, _) in enumerate(batch)])
        p = torch.cat([sample_descriptors(d[2 + i], q, desc.stride) for i, (_, q) in enumerate(batch)])
        ids = torch.cat([torch.full((len(xy),), i) for i, (xy, _) in enumerate(batch)])
        pos = torch.cat([q for _, q in batch])
        return hardest_negative_triplet_loss(a, p, ids, pos, margin=0.5)[0]

    opt = torch.optim.Adam(desc.parameters(), lr=1e-3)
    first = loss().item()
    for _ in range(10):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 0.8 * first
