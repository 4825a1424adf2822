#!/usr/bin/env python3
"""The strek model (docs/model.md) in PyTorch, read from a strek weights file, for speed comparisons with the
engine on the same GPU (tools/gpu/run.sh). Eager or torch.compile; batches of images of one size.

It follows docs/model.md: gray and normalisation, the triangle-filter pyramid, the detector's valid convolutions
and orientation pooling, NMS with ties to the lower index, top-k over all levels, the descriptor U-Net, bilinear
sampling and L2 renormalisation. One difference: top-k uses torch.topk, whose order among exactly equal scores is
not specified (the engine orders them by level and pixel index). The layers and the U-Net's walk come from the
training tools (tools/train/strek_train: config.detector_topology, config.descriptor_topology, unet.unet_forward),
so this file has no copy of the model's topology. Descriptor version 1 ("unet") only: version 2's keypoint
alignment is not implemented here.

    python3 tools/gpu/strek_torch.py bench --weights weights/strek.safetensors --images DIR --json OUT.json
    python3 tools/gpu/strek_torch.py extract --weights W IMAGE OUT.npz     # features, for checking against strek
"""

import argparse
import json
import math
import pathlib
import statistics
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "train"))
from strek_train.config import descriptor_topology, detector_topology, heatmap_margin  # noqa: E402
from strek_train.unet import unet_forward  # noqa: E402


def read_weights(path):
    """(config dict, {name: float32 tensor}) from a strek safetensors file (no safetensors package needed)."""
    data = pathlib.Path(path).read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", {}) or {}
    if meta.get("strek.format") != "1":
        raise ValueError(f"{path}: not a strek weights file (strek.format {meta.get('strek.format')!r})")
    config = json.loads(meta["strek.config"])
    tensors = {}
    body = data[8 + n :]
    for name, info in header.items():
        start, end = info["data_offsets"]
        dtype = {"F32": np.float32, "F16": np.float16}[info["dtype"]]
        array = np.frombuffer(body[start:end], dtype=dtype).reshape(info["shape"]).astype(np.float32)
        tensors[name] = torch.from_numpy(array.copy())
    return config, tensors


def f32_round(x):
    """Rust's f32::round (half away from zero) of a non-negative float32 product."""
    return int(math.floor(float(np.float32(x)) + 0.5))


def pyramid(config, w, h):
    """Level sizes (docs/model.md, Inference): [(w_l, h_l)], level 0 always kept unless under the receptive field."""
    r = detector_topology(config).receptive_field
    inf = config["inference"]
    levels = []
    for i, s in enumerate(inf["scales"]):
        if i == 0:
            lw, lh = w, h
        else:
            lw, lh = f32_round(np.float32(w) * np.float32(s)), f32_round(np.float32(h) * np.float32(s))
        if (i > 0 and min(lw, lh) < inf["min_level_side"]) or lw < r or lh < r:
            continue
        levels.append((lw, lh))
    return levels


def resize_matrix(n, m):
    """[m, n] matrix of the separable triangle filter from n to m samples (taps clamped to the edge)."""
    ratio = np.float32(n) / np.float32(m)
    radius = max(np.float32(1.0), ratio)
    out = np.zeros((m, n), np.float32)
    for u in range(m):
        centre = (np.float32(u) + np.float32(0.5)) * ratio - np.float32(0.5)
        lo, hi = math.ceil(centre - radius), math.floor(centre + radius)
        for j in range(lo, hi + 1):
            wgt = max(np.float32(0.0), np.float32(1.0) - abs(np.float32(j) - centre) / radius)
            out[u, min(max(j, 0), n - 1)] += wgt
        out[u] /= out[u].sum()
    return torch.from_numpy(out)


class StrekTorch(torch.nn.Module):
    def __init__(self, config, tensors, size, max_keypoints=1000):
        super().__init__()
        self.config = config
        self.w, self.h = size
        self.k = max_keypoints
        self.n = config["group_order"]
        self.mean, self.std = config["input"]["mean"], config["input"]["std"]
        inf = config["inference"]
        self.radius, self.border, self.threshold = inf["nms_radius"], inf["border"], inf["score_threshold"]
        self.det_topology = detector_topology(config)
        self.desc_topology = descriptor_topology(config)
        if self.desc_topology.group:
            raise ValueError("strek_torch.py runs descriptor version 1 (kind unet) only, not "
                             f"{self.desc_topology.kind!r}: version 2's keypoint alignment is not implemented here")

        def params(layers, part):
            return [torch.nn.Parameter(tensors[f"{c.tensor_name}.{part}"], requires_grad=False) for c in layers]

        self.det_weight = torch.nn.ParameterList(params(self.det_topology.convs, "weight"))
        self.det_bias = torch.nn.ParameterList(params(self.det_topology.convs, "bias"))
        names = [c.name for c in self.desc_topology.convs]
        self.desc_weight = torch.nn.ParameterDict(dict(zip(names, params(self.desc_topology.convs, "weight"))))
        self.desc_bias = torch.nn.ParameterDict(dict(zip(names, params(self.desc_topology.convs, "bias"))))
        self.stride = self.desc_topology.stride
        self.levels = pyramid(config, self.w, self.h)
        self.margin = heatmap_margin(config)
        # resampling matrices per level (level 0 is the image itself)
        self.resize = [
            (resize_matrix(self.h, lh), resize_matrix(self.w, lw)) if (lw, lh) != (self.w, self.h) else None
            for lw, lh in self.levels
        ]
        for i, r in enumerate(self.resize):
            if r is not None:
                self.register_buffer(f"ry{i}", r[0])
                self.register_buffer(f"rx{i}", r[1])

    def gray(self, images):
        """uint8 [B, H, W, C] (C = 1 or 3) to normalised gray [B, 1, H, W]."""
        x = images.float()
        if x.shape[-1] >= 3:
            g = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
        else:
            g = x[..., 0]
        return ((g / 255.0 - self.mean) / self.std).unsqueeze(1)

    def detector(self, x):
        for layer in self.det_topology.convs:
            x = F.conv2d(x, self.det_weight[layer.index], self.det_bias[layer.index])
            if layer.relu:
                x = F.relu(x)
        return x  # [B, N, hh, hw]

    def orientation_pool(self, v):
        n = self.n
        best, r = v.max(dim=1)  # first argmax
        a = torch.gather(v, 1, ((r - 1) % n).unsqueeze(1)).squeeze(1)
        c = torch.gather(v, 1, ((r + 1) % n).unsqueeze(1)).squeeze(1)
        d = a - 2.0 * best + c
        t = torch.where(d < 0, (0.5 * (a - c) / d).clamp(-0.5, 0.5), torch.zeros_like(d))
        theta = (r.float() + t) * (2 * math.pi / n)
        theta = torch.where(theta < 0, theta + 2 * math.pi, theta)
        theta = torch.where(theta >= 2 * math.pi, theta - 2 * math.pi, theta)
        return best, theta

    def nms(self, s):
        """Keeps pixels that beat every other within the radius (ties to the lower linear index)."""
        r = self.radius
        hh, hw = s.shape[-2:]
        padded = F.pad(s, (r, r, r, r), value=float("-inf"))
        keep = s >= self.threshold
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                if dy == 0 and dx == 0:
                    continue
                other = padded[:, r + dy : r + dy + hh, r + dx : r + dx + hw]
                later = dy > 0 or (dy == 0 and dx > 0)  # the neighbour's linear index is higher
                keep = keep & ((s > other) if not later else (s >= other))
        b = self.border
        if b > 0:
            inner = torch.zeros_like(keep)
            inner[:, b : hh - b, b : hw - b] = True
            keep = keep & inner
        return keep

    def descriptor(self, x):
        def conv(step, x):
            y = F.conv2d(x, self.desc_weight[step.name], self.desc_bias[step.name], padding=step.kernel // 2)
            return F.relu(y) if step.relu else y

        return unet_forward(self.desc_topology, x, conv)

    def forward(self, images):
        """uint8 [B, H, W, C] -> keypoints [B, k, 2], scores, orientations, scales [B, k], descriptors [B, k, D],
        valid [B, k] (fewer than k keypoints leave invalid slots at the end)."""
        g = self.gray(images)
        bsz = g.shape[0]
        scores, orients, xs, ys, scales = [], [], [], [], []
        for i, (lw, lh) in enumerate(self.levels):
            x = g if self.resize[i] is None else getattr(self, f"ry{i}") @ g @ getattr(self, f"rx{i}").T
            s, o = self.orientation_pool(self.detector(x))
            hh, hw = s.shape[-2:]
            keep = self.nms(s)
            scores.append(torch.where(keep, s, torch.full_like(s, float("-inf"))).reshape(bsz, -1))
            orients.append(o.reshape(bsz, -1))
            sx, sy = np.float32(self.w) / np.float32(lw), np.float32(self.h) / np.float32(lh)
            gy, gx = torch.meshgrid(torch.arange(hh, device=g.device), torch.arange(hw, device=g.device), indexing="ij")
            xs.append(((gx.float() + self.margin + 0.5) * float(sx) - 0.5).reshape(-1))
            ys.append(((gy.float() + self.margin + 0.5) * float(sy) - 0.5).reshape(-1))
            scales.append(torch.full((hh * hw,), float(np.sqrt(sx * sy)), device=g.device))
        all_scores = torch.cat(scores, dim=1)
        k = min(self.k, all_scores.shape[1])
        top, index = torch.topk(all_scores, k, dim=1)
        valid = top > float("-inf")
        kx, ky = torch.cat(xs)[index], torch.cat(ys)[index]
        orientation = torch.gather(torch.cat(orients, dim=1), 1, index)
        scale = torch.cat(scales)[index]
        dmap = self.descriptor(g)
        descriptors = self.sample(dmap, kx, ky)
        return torch.stack([kx, ky], dim=-1), top, orientation, scale, descriptors, valid

    def sample(self, dmap, kx, ky):
        bsz, dim, mh, mw = dmap.shape
        u = ((kx + 0.5) / self.stride - 0.5).clamp(0, mw - 1)
        v = ((ky + 0.5) / self.stride - 0.5).clamp(0, mh - 1)
        x0, y0 = u.floor().long(), v.floor().long()
        x1, y1 = (x0 + 1).clamp(max=mw - 1), (y0 + 1).clamp(max=mh - 1)
        fx, fy = (u - x0.float()).unsqueeze(1), (v - y0.float()).unsqueeze(1)
        flat = dmap.reshape(bsz, dim, mh * mw)

        def at(yy, xx):
            return torch.gather(flat, 2, (yy * mw + xx).unsqueeze(1).expand(bsz, dim, -1))

        top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
        bottom = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
        d = top * (1 - fy) + bottom * fy  # [B, D, k]
        d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return d.transpose(1, 2)


def load_image(path):
    from PIL import Image

    img = np.array(Image.open(path).convert("RGB"))
    return img


def extract_npz(args):
    config, tensors = read_weights(args.weights)
    img = load_image(args.image)
    h, w = img.shape[:2]
    model = StrekTorch(config, tensors, (w, h), args.k).to(args.device)
    with torch.no_grad():
        kp, sc, ori, scl, desc, valid = model(torch.from_numpy(img).unsqueeze(0).to(args.device))
    m = valid[0].cpu().numpy()
    np.savez(
        args.out,
        keypoints=kp[0].cpu().numpy()[m],
        scores=sc[0].cpu().numpy()[m],
        orientations=ori[0].cpu().numpy()[m],
        scales=scl[0].cpu().numpy()[m],
        descriptors=desc[0].cpu().numpy()[m],
        image_size=np.array([w, h], np.int32),
    )
    print(f"{args.image}: {int(m.sum())} keypoints -> {args.out}")


def bench(args):
    config, tensors = read_weights(args.weights)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        # fp32 convolutions as strek runs them: no TF32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    root = pathlib.Path(args.images)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batch.split(",")]
    results = []
    for mode in args.modes.split(","):
        for w, h in sizes:
            folder = root / f"{w}x{h}"
            files = sorted(folder.glob("*.png"), key=lambda p: int(p.stem))
            if not files:
                print(f"{folder}: no images (run strek bench --save-images first)", file=sys.stderr)
                continue
            model = StrekTorch(config, tensors, (w, h), args.k).to(device).eval()
            run = torch.compile(model, mode=args.compile_mode, dynamic=False) if mode == "compile" else model
            for batch in batches:
                images = np.stack([load_image(files[i % len(files)]) for i in range(batch)])
                host = torch.from_numpy(images)

                def once():
                    with torch.no_grad():
                        out = run(host.to(device))
                        return [t.cpu() for t in out]

                t0 = time.perf_counter()
                for _ in range(args.warmup):
                    once()
                warm = time.perf_counter() - t0
                walls = []
                for _ in range(args.reps):
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                    out = once()
                    walls.append(time.perf_counter() - start)
                keypoints = float(out[5].sum()) / batch
                walls.sort()
                median = statistics.median(walls)
                row = {
                    "mode": mode, "width": w, "height": h, "batch": batch,
                    "wall": {"median": median, "p10": walls[int(0.1 * (len(walls) - 1) + 0.5)],
                             "p90": walls[int(0.9 * (len(walls) - 1) + 0.5)], "samples": walls},
                    "warmup_seconds": warm, "keypoints_per_image": keypoints,
                    "images_per_second": batch / median,
                }
                results.append(row)
                print(f"torch {mode} {w}x{h} batch {batch}: {1e3 * median:.2f} ms (warm-up {warm:.1f} s)", flush=True)
            del run, model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    doc = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "tf32": False,
        "weights": str(args.weights),
        "top_k": args.k,
        "warmup": args.warmup,
        "repetitions": args.reps,
        "compile_mode": args.compile_mode,
        "results": results,
    }
    pathlib.Path(args.json).write_text(json.dumps(doc, indent=1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="time eager and compiled extraction on strek bench's images")
    b.add_argument("--weights", required=True)
    b.add_argument("--images", required=True, help="strek bench --save-images folder: <W>x<H>/<i>.png")
    b.add_argument("--sizes", default="640x480,1280x720,1920x1080,3840x2160")
    b.add_argument("--batch", default="1,8")
    b.add_argument("--modes", default="eager,compile", help="eager, compile, or both")
    b.add_argument("--compile-mode", default="default", help="torch.compile mode (default, reduce-overhead, ...)")
    b.add_argument("--warmup", type=int, default=3)
    b.add_argument("--reps", type=int, default=20)
    b.add_argument("--k", type=int, default=1000)
    b.add_argument("--device", default="cuda")
    b.add_argument("--json", required=True)
    e = sub.add_parser("extract", help="features of one image as npz (the layout of design.md)")
    e.add_argument("--weights", required=True)
    e.add_argument("--k", type=int, default=1000)
    e.add_argument("--device", default="cpu")
    e.add_argument("image")
    e.add_argument("out")
    args = parser.parse_args(argv)
    if args.command == "bench":
        bench(args)
    else:
        extract_npz(args)


if __name__ == "__main__":
    main()
