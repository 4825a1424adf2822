"""Training CLI: `python3 -m strek_train.train --stage detector|descriptor --out RUN_DIR [options]`.

Resumes from RUN_DIR/checkpoint.pt when it exists (the same command continues a run), writes checkpoints every
--ckpt-minutes atomically (temporary file, then rename), on SIGTERM/SIGINT and at the end, and appends metrics to
RUN_DIR/log.csv.  The same command runs on CUDA with --device cuda (at full size: --size 256 --batch 16)."""
from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict

import cv2
import numpy as np
import torch

from .basis import BasisSpec
from .config import DESCRIPTOR_KINDS, default_config, default_descriptor, heatmap_margin
from .data import (AUGMENTATIONS, HIRES_VALIDATION_COUNT, PairConfig, PairSource, default_data_dir, default_hires_dir,
                   split_images)
from .descriptor import build_descriptor, describe_budget as describe_descriptor
from .detector import Detector, describe_budget as describe_detector
from .layers import orientation_pool
from .losses import hardest_negative_triplet_loss, info_nce_loss
from .metrics import matching_accuracy, nms_topk, repeatability
from .reward import (RewardConfig, localisation_loss, parabola_offsets, reinforce_loss, repeatability_rewards,
                     reproject)
from .sampler import SamplerConfig, sample_keypoints

CHECKPOINT = "checkpoint.pt"
LOG_COLUMNS = {
    "detector": ["step", "elapsed_s", "sec_per_step", "loss", "reward", "baseline", "points", "visible", "repeated",
                 "loc_before", "loc_after", "val_rep3", "val_points", "val_rep3_real", "val_rep3_hires", "val_rep1",
                 "val_rep1_real", "val_rep1_hires"],
    "descriptor": ["step", "elapsed_s", "sec_per_step", "loss", "pos_dist", "neg_dist", "active", "keypoints",
                   "val_mma3", "val_matches", "val_mma3_real", "val_mma3_hires"],
}
HIRES_VAL_PAIRS = 16  # full-resolution validation pairs, spread over the held-out hires photos


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 -m strek_train.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=["detector", "descriptor"], required=True)
    p.add_argument("--out", required=True, help="run directory: checkpoint.pt, log.csv (resumed when present)")
    p.add_argument("--detector", help="descriptor stage: the frozen detector's checkpoint.pt")
    p.add_argument("--data", default=default_data_dir(), help="folder of photos (last 100 by name: validation)")
    p.add_argument("--size", type=int, default=128, help="training view size in pixels")
    p.add_argument("--view-scale", type=float, nargs=2, default=list(PairConfig.view_scale), metavar=("LO", "HI"),
                   help="per-view scale range (log-uniform); the ratio between two views reaches HI/LO")
    p.add_argument("--init", help="start a new run from this checkpoint's weights (fine-tuning with this command's "
                                  "settings; a fresh optimizer and step 0)")
    p.add_argument("--batch", type=int, default=8, help="pairs per step")
    p.add_argument("--steps", type=int, default=100_000, help="train until this step count")
    p.add_argument("--keep-val-checkpoints", action="store_true",
                   help="also write RUN/val-STEP.pt at every validation (git-ignored), so that the weights of the "
                        "best held-out step can be chosen afterwards")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (applied on resume too)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--group-order", type=int, default=8, help="N of C_N (divisible by 4)")
    p.add_argument("--temperature", type=float, default=0.01, help="sampler softmax temperature")
    p.add_argument("--radius", type=float, default=6.0, help="sampler mask radius (heatmap px)")
    p.add_argument("--mass-threshold", type=float, default=0.02, help="sampler stops under this remaining mass")
    p.add_argument("--budget", type=int, default=64, help="sampler: most keypoints per image")
    p.add_argument("--logit-bound", type=float, default=4.0, help="sampler: soft bound of logits/T in nats (0: off)")
    p.add_argument("--match-distance", type=float, default=3.0, help="reward: repeated within this distance (px)")
    p.add_argument("--penalty", type=float, default=-0.5, help="reward of a visible keypoint not repeated")
    p.add_argument("--precise-distance", type=float, default=1.5,
                   help="reward: a keypoint repeated within this distance (px) earns --precise-bonus on top")
    p.add_argument("--precise-bonus", type=float, default=0.0, help="reward bonus of a precise repeat (0: off)")
    p.add_argument("--localisation-weight", type=float, default=0.0,
                   help="detector: weight of the localisation loss, the distance (px) between the refined positions "
                        "of repeated keypoints (NMS maxima), added to the policy loss (0: off)")
    p.add_argument("--margin", type=float, default=0.5, help="descriptor triplet margin")
    p.add_argument("--desc-keypoints", type=int, default=64, help="descriptor stage: keypoints per view")
    p.add_argument("--descriptor-kind", choices=DESCRIPTOR_KINDS, default="unet",
                   help="a new descriptor run's network: unet (version 1) or group_unet (version 2, C_N fields, "
                        "aligned by the keypoint orientation)")
    p.add_argument("--desc-loss", choices=["triplet", "infonce"], default="triplet",
                   help="descriptor loss: triplet (hardest negative, --margin) or InfoNCE (--nce-temperature)")
    p.add_argument("--nce-temperature", type=float, default=0.07, help="InfoNCE softmax temperature")
    p.add_argument("--pos-jitter", type=float, default=0.0,
                   help="descriptor stage: std (px) of the Gaussian jitter of positives (clipped at 2 std)")
    p.add_argument("--augment", choices=AUGMENTATIONS, default="basic",
                   help="photometric changes: basic (the original, mild) or real (noise up to 0.08 and "
                        "signal-dependent, blur and motion blur, JPEG q20-95, contrast 0.3-2.5, brightness +-0.25, "
                        "low light, shading); real also adds held-out validation under these changes")
    p.add_argument("--hires", type=float, default=0.0, metavar="FRACTION",
                   help="share of pairs cut at scale 1 from the full-resolution photos of --hires-data (their last "
                        f"{HIRES_VALIDATION_COUNT} by name are held out for validation)")
    p.add_argument("--hires-data", default=default_hires_dir(), help="folder of camera-resolution photos")
    p.add_argument("--val-size", type=int, default=256)
    p.add_argument("--val-pairs", type=int, default=100)
    p.add_argument("--val-keypoints", type=int, default=150, help="top-k keypoints per validation view")
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--ckpt-minutes", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 leaves the other cores free)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--images", help=argparse.SUPPRESS)  # tests: a .npy stack of gray images instead of --data
    return p.parse_args(argv)


# Arguments that define what is trained; a resumed run keeps the checkpoint's values.
FIXED_ON_RESUME = ["stage", "seed", "group_order", "size", "view_scale", "init", "batch", "temperature", "radius", "mass_threshold",
                   "budget", "logit_bound", "match_distance", "penalty", "margin", "desc_keypoints", "val_size",
                   "val_pairs", "val_keypoints", "data", "detector", "descriptor_kind", "desc_loss", "nce_temperature",
                   "pos_jitter", "augment", "hires", "hires_data"]


def command_line(module: str) -> str:
    return " ".join(shlex.quote(a) for a in ["python3", "-m", module, *sys.argv[1:]])


def atomic_save(obj, path: str) -> None:
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


class RunLog:
    """log.csv of a run; on resume, rows written after the checkpoint are dropped (they will be redone)."""

    def __init__(self, path: str, columns: list[str], resume_step: int | None):
        self.path, self.columns = path, columns
        rows = []
        if resume_step is not None and os.path.exists(path):
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with open(path + ".tmp", "w", newline="") as f:
            w = csv.DictWriter(f, columns)
            w.writeheader()
            w.writerows(rows)
        os.replace(path + ".tmp", path)

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                                                      for k, v in row.items() if k in self.columns})


def load_images(args) -> tuple[list, list, str]:
    if args.images:
        stack = list(np.load(args.images))
        return stack[: max(1, len(stack) - 2)], stack[-2:], f"synthetic stack {args.images}"
    train, val = split_images(args.data)
    return train, val, f"{args.data}: {len(train)} training photos, last {len(val)} by name held out"


def git_commit() -> str:
    """HEAD of the repository, with "+dirty" when tools/train has uncommitted changes."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=here, timeout=10)
        if head.returncode != 0:
            return "unknown (no commit yet)"
        dirty = subprocess.run(["git", "status", "--porcelain", "--", ".."], capture_output=True, text=True,
                               cwd=here, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown (git not available)"


def build_detector(train_config: dict | None, cfg: dict, temperature: float | None = None) -> Detector:
    """A detector as a checkpoint describes it (basis, logit gain), or a fresh one for the sampler temperature."""
    if train_config is None:
        return Detector(cfg, logit_gain=temperature)
    return Detector(cfg, logit_gain=train_config["logit_gain"], spec=BasisSpec(**train_config["basis"]))


def frozen_detector(det_ckpt: dict, device: torch.device) -> Detector:
    """The trained detector of a checkpoint, in eval mode and without gradients (the descriptor stage's)."""
    detector = build_detector(det_ckpt["train_config"], det_ckpt["model_config"]).to(device)
    detector.load_state_dict(det_ckpt["model"])
    return detector.eval().requires_grad_(False)


def load_checkpoint(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def resume_checkpoint(args) -> dict | None:
    """OUT/checkpoint.pt when it exists; the arguments that define a run (FIXED_ON_RESUME, the stage among them)
    are then the checkpoint's."""
    path = os.path.join(args.out, CHECKPOINT)
    if not os.path.exists(path):
        return None
    ckpt = load_checkpoint(path)
    saved = ckpt["args"]
    for key in FIXED_ON_RESUME:
        if key in saved and getattr(args, key) != saved[key]:
            print(f"resume: keeping {key}={saved[key]!r} from the checkpoint (command line: {getattr(args, key)!r})",
                  flush=True)
            setattr(args, key, saved[key])
    return ckpt


def init_checkpoint(args) -> dict | None:
    """The --init checkpoint, whose weights a new run starts from; it must be of the same stage."""
    if not args.init:
        return None
    init = load_checkpoint(args.init)
    if init["args"]["stage"] != args.stage:
        raise SystemExit(f"--init {args.init} is a {init['args']['stage']} run, not {args.stage}")
    return init


def train_configs(args) -> tuple[SamplerConfig, RewardConfig, PairConfig]:
    """The sampler, reward and pair settings of the command line (both stages record them in the checkpoint)."""
    return (SamplerConfig(args.temperature, args.radius, args.mass_threshold, args.budget, args.logit_bound),
            RewardConfig(match_distance=args.match_distance, penalty=args.penalty,
                         precise_distance=args.precise_distance, precise_bonus=args.precise_bonus,
                         localisation_weight=args.localisation_weight),
            PairConfig(size=args.size, view_scale=tuple(args.view_scale), augment=args.augment,
                       hires_fraction=args.hires))


class Trainer:
    """A training run, the part both stages share: data, optimiser, resume, checkpoints, log and loop.

    A stage's subclass (DetectorTrainer, DescriptorTrainer) builds its models (`new_model_config`, `build_models`)
    and says what one step (`train_step`) and one validation (`validate`) are."""

    def __init__(self, args, resumed: dict | None, init: dict | None):
        self.args = args
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
        self.device = torch.device(args.device)
        os.makedirs(args.out, exist_ok=True)
        self.ckpt_path = os.path.join(args.out, CHECKPOINT)
        base = resumed or init
        self.cfg = base["model_config"] if base else self.new_model_config()
        self.margin = heatmap_margin(self.cfg)
        self.sampler_cfg, self.reward_cfg, self.pair_cfg = train_configs(args)
        self.load_data()
        torch.manual_seed(args.seed)
        self.detector, self.model = self.build_models(base)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=args.lr)
        self.step, self.baseline, self.elapsed = 0, None, 0.0
        self.restore(init, resumed)
        self.log = RunLog(os.path.join(args.out, "log.csv"), LOG_COLUMNS[args.stage],
                          self.step if resumed is not None else None)
        self.stop_requested = False

    # ---- per stage -----------------------------------------------------------------------------------------
    def new_model_config(self) -> dict:
        """A new run's model config."""
        raise NotImplementedError

    def build_models(self, base: dict | None) -> tuple[Detector, torch.nn.Module]:
        """(the detector, the module this stage trains), after torch.manual_seed(--seed)."""
        raise NotImplementedError

    def detector_provenance(self) -> dict | None:
        """The frozen detector this stage trains against, for the checkpoint."""
        return None

    def train_step(self) -> dict:
        raise NotImplementedError

    def validate(self) -> dict:
        raise NotImplementedError

    # ---- shared --------------------------------------------------------------------------------------------
    def load_data(self) -> None:
        """The training pairs (`source`), the held-out pairs (`val_sets`) and where they come from (`data_desc`)."""
        a = self.args
        train_imgs, val_imgs, self.data_desc = load_images(a)
        hires_train, hires_val = [], []
        if a.hires > 0:
            hires_train, hires_val = split_images(a.hires_data, HIRES_VALIDATION_COUNT)
            self.data_desc += (f"; {a.hires:g} of pairs at scale 1 from {a.hires_data}: {len(hires_train)} "
                               f"photos, last {len(hires_val)} by name held out")
        self.source = PairSource(train_imgs, self.pair_cfg, self.cfg, seed=a.seed, hires=hires_train)
        self.val_sets = self.validation_sets(val_imgs, hires_val)

    def restore(self, init: dict | None, resumed: dict | None) -> None:
        """The weights of --init, or the whole state of the resumed run; then --lr either way."""
        if init is not None:
            self.model.load_state_dict(init["model"])
            print(f"initialised from {self.args.init} (step {init['step']})", flush=True)
        if resumed is not None:
            self.model.load_state_dict(resumed["model"])
            self.optimizer.load_state_dict(resumed["optimizer"])
            self.step, self.baseline, self.elapsed = resumed["step"], resumed["baseline"], resumed["elapsed_s"]
            print(f"resumed {self.ckpt_path} at step {self.step}", flush=True)
        for group in self.optimizer.param_groups:
            group["lr"] = self.args.lr

    def validation_sets(self, val_imgs: list, hires_val: list) -> dict:
        """Held-out pairs, made once: "" under the basic changes (comparable across all runs), "_real" under the
        camera-like ones (--augment real), "_hires" full-resolution pairs from held-out hires photos (--hires)."""
        a = self.args
        n_val = min(a.val_pairs, len(val_imgs)) if not a.images else len(val_imgs)
        seed = a.seed + 7919
        sets = {"": PairSource(val_imgs, PairConfig(size=a.val_size), self.cfg, seed=seed)
                .batch(0, n_val, "cpu", image_indices=list(range(n_val)))}
        changes = PairConfig(size=a.val_size, augment=a.augment)  # the run's own photometric changes
        if a.augment != "basic":
            sets["_real"] = PairSource(val_imgs, changes, self.cfg, seed=seed).batch(0, n_val, "cpu",
                                                                                     image_indices=list(range(n_val)))
        if hires_val:
            sets["_hires"] = PairSource([], changes, self.cfg, seed=seed, hires=hires_val).hires_batch(
                0, HIRES_VAL_PAIRS)
        return sets

    def checkpoint(self, path: str | None = None) -> None:
        atomic_save({
            "format": "strek-train-1",
            "stage": self.args.stage,
            "step": self.step,
            "elapsed_s": self.elapsed,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "baseline": self.baseline,
            "model_config": self.cfg,
            "train_config": {"sampler": self.sampler_cfg.to_dict(), "reward": self.reward_cfg.to_dict(),
                             "pairs": self.pair_cfg.to_dict(), "lr": self.args.lr, "batch": self.args.batch,
                             "descriptor_loss": {"loss": self.args.desc_loss, "margin": self.args.margin,
                                                 "temperature": self.args.nce_temperature,
                                                 "pos_jitter": self.args.pos_jitter,
                                                 "keypoints": self.args.desc_keypoints},
                             "logit_gain": self.detector.logit_gain, "basis": asdict(self.detector.spec)},
            "args": vars(self.args),
            "command": command_line("strek_train.train"),
            "data": self.data_desc,
            "detector": self.detector_provenance(),
            "commit": git_commit(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }, path or self.ckpt_path)

    def validate_sets(self, metrics, count_name: str) -> dict:
        """`metrics(pairs) -> ({score name: score}, count)` on every held-out set: each score per set (its name + the
        set's suffix), the count on the main set only."""
        out = {}
        for suffix, pairs in self.val_sets.items():
            scores, count = metrics(pairs)
            out.update({f"{name}{suffix}": score for name, score in scores.items()})
            if not suffix:
                out[count_name] = count
        return out

    def run(self) -> None:
        a = self.args
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: setattr(self, "stop_requested", True))
        print(describe_detector(self.cfg), flush=True)
        print(describe_descriptor(self.cfg), flush=True)
        print(f"stage {a.stage}, step {self.step} -> {a.steps}, view {a.size}px, batch {a.batch}, device "
              f"{self.device}, {torch.get_num_threads()} thread(s); data: {self.data_desc}", flush=True)
        if self.step == 0:
            row = {"step": 0, "elapsed_s": 0.0, **self.validate()}
            self.log.write(row)
            print(json.dumps(row), flush=True)
        self.model.train()
        last_ckpt = time.time()
        acc, t_window = [], time.time()
        while self.step < a.steps and not self.stop_requested:
            t0 = time.time()
            metrics = self.train_step()
            self.step += 1
            self.elapsed += time.time() - t0
            acc.append(metrics)
            row = None
            if self.step % a.log_every == 0:
                row = {k: float(np.mean([m[k] for m in acc])) for k in acc[0]}
                row.update(step=self.step, elapsed_s=self.elapsed, sec_per_step=(time.time() - t_window) / len(acc))
                acc, t_window = [], time.time()
            if self.step % a.val_every == 0:
                row = {**(row or {"step": self.step, "elapsed_s": self.elapsed}), **self.validate()}
                t_window = time.time()
                if a.keep_val_checkpoints:
                    self.checkpoint(os.path.join(a.out, f"val-{self.step:06d}.pt"))
            if row is not None:
                self.log.write(row)
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
                      flush=True)
            if time.time() - last_ckpt >= a.ckpt_minutes * 60:
                self.checkpoint()
                last_ckpt = time.time()
        self.checkpoint()
        why = "stop requested" if self.stop_requested else "step target reached"
        print(f"checkpoint written at step {self.step} ({why})", flush=True)


class DetectorTrainer(Trainer):
    """Stage 1: the detector, trained by REINFORCE on the repeatability of its sampled keypoints."""

    def new_model_config(self) -> dict:
        """The defaults with the descriptor of --descriptor-kind (untrained until a descriptor run replaces it)."""
        cfg = default_config(group_order=self.args.group_order)
        cfg["descriptor"] = default_descriptor(self.args.descriptor_kind)
        return cfg

    def build_models(self, base: dict | None) -> tuple[Detector, torch.nn.Module]:
        train_config = base["train_config"] if base else None
        detector = build_detector(train_config, self.cfg, self.args.temperature).to(self.device)
        return detector, detector

    def train_step(self) -> dict:
        a = self.args
        v1, v2, h12 = self.source.batch(self.step, a.batch, self.device)
        heat = self.detector(torch.cat([v1, v2])).max(dim=1).values  # score logits [2B, H', W']
        gen = torch.Generator(device=self.device).manual_seed(a.seed * 1_000_003 + self.step)
        s = sample_keypoints(heat, self.sampler_cfg, gen)
        b = a.batch
        (r1, m1), (r2, m2) = repeatability_rewards(s.xy[:b], s.valid[:b], s.xy[b:], s.valid[b:], h12, self.margin,
                                                   tuple(heat.shape[-2:]), self.reward_cfg)
        counted = float(m1.sum() + m2.sum())
        mean_reward = float((r1.sum() + r2.sum()) / max(counted, 1))
        baseline = mean_reward if self.baseline is None else self.baseline  # the first step has no history
        loss = reinforce_loss([s.log_prob[:b], s.log_prob[b:]], [r1, r2], [m1, m2], baseline)
        loc = {}
        if self.reward_cfg.localisation_weight:
            xy, valid = self.peaks(heat.detach())
            loc_loss, loc = localisation_loss(heat[:b], xy[:b], valid[:b], heat[b:], xy[b:], valid[b:], h12,
                                              self.margin, self.reward_cfg.precise_distance)
            loss = loss + self.reward_cfg.localisation_weight * loc_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if counted:
            mom = self.reward_cfg.baseline_momentum if self.baseline is not None else 0.0
            self.baseline = mom * (self.baseline or 0.0) + (1 - mom) * mean_reward
        repeated_frac = float(((r1 > 0).sum() + (r2 > 0).sum()) / max(counted, 1))
        return {"loss": loss.item(), "reward": mean_reward, "baseline": self.baseline,
                "points": float(s.counts.float().mean()), "visible": counted / (2 * b), "repeated": repeated_frac,
                **loc}

    def peaks(self, heat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The engine's keypoints of each heatmap [B, H, W] (NMS maxima, the sampler's budget of the best): xy
        [B, K, 2] long and valid [B, K].  The localisation loss is taken there: a draw is often a shoulder of a
        peak, where the parabola is clamped and passes no gradient."""
        found = [nms_topk(h, self.sampler_cfg.budget, self.cfg["inference"]["nms_radius"])[0] for h in heat]
        xy = torch.zeros(len(found), self.sampler_cfg.budget, 2, dtype=torch.long, device=heat.device)
        valid = torch.zeros(len(found), self.sampler_cfg.budget, dtype=torch.bool, device=heat.device)
        for i, p in enumerate(found):
            xy[i, :len(p)], valid[i, :len(p)] = p, True
        return xy, valid

    @torch.no_grad()
    def heatmaps(self, views: torch.Tensor) -> torch.Tensor:
        self.detector.eval()
        out = torch.cat([self.detector.heatmap(views[i:i + 8].to(self.device)).cpu() for i in range(0, len(views), 8)])
        self.detector.train()
        return out

    def validate(self) -> dict:
        """rep@3 and rep@1 (the share repeated within 1 px: how well keypoints are localised) on every held-out set,
        the keypoint count on the main set."""
        return self.validate_sets(self.detector_val_metrics, "val_points")

    def detector_val_metrics(self, pairs) -> tuple[dict, float]:
        v1, v2, h12 = pairs
        hm1, hm2 = self.heatmaps(v1), self.heatmaps(v2)
        reps3, reps1, points = [], [], []
        for i in range(len(v1)):
            xy1, _ = nms_topk(hm1[i], self.args.val_keypoints, self.cfg["inference"]["nms_radius"])
            xy2, _ = nms_topk(hm2[i], self.args.val_keypoints, self.cfg["inference"]["nms_radius"])
            reps3.append(repeatability(xy1, xy2, h12[i], self.margin, tuple(hm1.shape[-2:]), 3.0)[0])
            reps1.append(repeatability(xy1, xy2, h12[i], self.margin, tuple(hm1.shape[-2:]), 1.0)[0])
            points.append((len(xy1) + len(xy2)) / 2)
        return {"val_rep3": float(np.mean(reps3)), "val_rep1": float(np.mean(reps1))}, float(np.mean(points))


class DescriptorTrainer(Trainer):
    """Stage 2: the descriptor, trained on the keypoints and orientations of a frozen detector (--detector)."""

    def __init__(self, args, resumed: dict | None, init: dict | None):
        if not args.detector:
            raise SystemExit("--stage descriptor needs --detector RUN/checkpoint.pt (a trained detector)")
        self.det_ckpt = load_checkpoint(args.detector)
        super().__init__(args, resumed, init)

    def new_model_config(self) -> dict:
        """The frozen detector's model config with the descriptor of --descriptor-kind."""
        cfg = json.loads(json.dumps(self.det_ckpt["model_config"]))
        cfg["descriptor"] = default_descriptor(self.args.descriptor_kind)
        return cfg

    def build_models(self, base: dict | None) -> tuple[Detector, torch.nn.Module]:
        # Every descriptor run so far first drew a new detector's initial weights here and dropped them; drawing
        # them still keeps a new run's initial descriptor (for a given --seed) what it was.
        build_detector(base["train_config"] if base else None, self.cfg, self.args.temperature)
        detector = frozen_detector(self.det_ckpt, self.device)
        return detector, build_descriptor(self.cfg).to(self.device)

    def detector_provenance(self) -> dict:
        return {"checkpoint": self.args.detector, "steps": self.det_ckpt["step"]}

    @torch.no_grad()
    def score_and_orientation(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Score logits and orientations [B, H', W'] of the frozen detector (orientation pooling)."""
        self.detector.eval()
        parts = [orientation_pool(self.detector(views[i:i + 8].to(self.device))) for i in range(0, len(views), 8)]
        return torch.cat([p[0].cpu() for p in parts]), torch.cat([p[1].cpu() for p in parts])

    def detect(self, views: torch.Tensor, k: int) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """The engine's keypoints (NMS top-k, refined to sub-pixel as docs/model.md says) per view: heatmap xy [K, 2]
        float, their orientations [K] (read at the NMS pixel, as the engine does), and the orientation maps
        [B, H', W']."""
        score, theta = self.score_and_orientation(views)
        pixels = [nms_topk(h, k, self.cfg["inference"]["nms_radius"])[0] for h in score]
        refined = [xy.float() + parabola_offsets(h[None], xy[None])[0] for h, xy in zip(score, pixels)]
        return refined, [theta[i, xy[:, 1], xy[:, 0]] for i, xy in enumerate(pixels)], theta

    def jitter(self, p: torch.Tensor, index: int) -> torch.Tensor:
        """Positives moved by Gaussian noise of std --pos-jitter px, clipped at 2 std (deterministic per step)."""
        a = self.args
        if a.pos_jitter <= 0:
            return p
        gen = torch.Generator().manual_seed((a.seed * 1_000_003 + self.step) * 1009 + index)
        noise = (torch.randn(p.shape, generator=gen, dtype=torch.float64) * a.pos_jitter).clamp(-2 * a.pos_jitter,
                                                                                               2 * a.pos_jitter)
        return p + noise.to(p.device, p.dtype)

    def train_step(self) -> dict:
        a = self.args
        v1, v2, h12 = self.source.batch(self.step, a.batch, self.device)
        keypoints, thetas, _ = self.detect(v1, a.desc_keypoints)
        # Version 2 aligns positives by the detector's own orientation in view 2, as at inference.
        theta2 = self.score_and_orientation(v2)[1] if self.model.topology.group else None
        dmaps = self.model(torch.cat([v1, v2]))
        size = (a.size - 2 * self.margin, a.size - 2 * self.margin)
        image_hw = (a.size, a.size)
        anchors, positives, ids, positions = [], [], [], []
        for i, xy in enumerate(keypoints):
            xy = xy.to(self.device)
            p, _ = reproject(xy[None].double(), h12[i][None], self.margin, size)
            p = self.jitter(p[0], i)
            vis = (p[:, 0] >= 0) & (p[:, 0] <= size[1] - 1) & (p[:, 1] >= 0) & (p[:, 1] <= size[0] - 1)
            th1 = thetas[i][vis.cpu()].to(self.device)
            th2 = None
            if theta2 is not None:
                q = p[vis].round().long().cpu()
                th2 = theta2[i, q[:, 1], q[:, 0]].to(self.device)
            xy, p = xy[vis].float() + self.margin, p[vis].float() + self.margin  # image pixels
            anchors.append(self.model.sample(dmaps[i], xy, th1, image_hw))
            positives.append(self.model.sample(dmaps[a.batch + i], p, th2, image_hw))
            ids.append(torch.full((len(xy),), i, device=self.device))
            positions.append(p)
        args = (torch.cat(anchors), torch.cat(positives), torch.cat(ids), torch.cat(positions))
        if len(args[0]) < 2:  # no pair to contrast (views without visible keypoints): nothing to learn this step
            return {"loss": 0.0, "pos_dist": 0.0, "neg_dist": 0.0, "active": 0.0, "keypoints": 0.0}
        if a.desc_loss == "infonce":
            loss, stats = info_nce_loss(*args, temperature=a.nce_temperature)
        else:
            loss, stats = hardest_negative_triplet_loss(*args, margin=a.margin)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item(), **stats, "keypoints": sum(len(x) for x in anchors) / a.batch}

    @torch.no_grad()
    def validate(self) -> dict:
        return self.validate_sets(self.descriptor_val_metrics, "val_matches")

    def descriptor_val_metrics(self, pairs) -> tuple[dict, float]:
        v1, v2, h12 = pairs
        k = self.args.val_keypoints
        (kp1, th1, _), (kp2, th2, _) = self.detect(v1, k), self.detect(v2, k)
        self.model.eval()
        accs, counts = [], []
        image_hw = tuple(v1.shape[-2:])
        for i in range(len(v1)):
            d1, d2 = self.model(torch.stack([v1[i], v2[i]]).to(self.device)).cpu()
            xy1, xy2 = kp1[i].float() + self.margin, kp2[i].float() + self.margin
            acc, n = matching_accuracy(kp1[i], self.model.sample(d1, xy1, th1[i], image_hw), kp2[i],
                                       self.model.sample(d2, xy2, th2[i], image_hw), h12[i], self.margin)
            accs.append(acc)
            counts.append(n)
        self.model.train()
        return {"val_mma3": float(np.mean(accs))}, float(np.mean(counts))


TRAINERS = {"detector": DetectorTrainer, "descriptor": DescriptorTrainer}


def main(argv=None) -> None:
    args = parse_args(argv)
    resumed = resume_checkpoint(args)  # a resumed run keeps its stage, whatever --stage says
    init = init_checkpoint(args) if resumed is None else None
    TRAINERS[args.stage](args, resumed, init).run()


if __name__ == "__main__":
    main()
