#!/usr/bin/env python3
"""strek's CPU path next to ONNX Runtime (CPU) on the same model, in one run, as one table.

The model comes from a strek weights file (weights/strek.safetensors, or a random model with the exact structure of a
trained one, written by `cargo run --release --example cpu_timing -- weights PATH`). It is built in PyTorch from the
dense tensors by the training tools' own reference (tools/train/strek_train/reference.py: the plain convolutions
the engine runs), exported to ONNX with dynamic height and width (detector: group logits + orientation pooling;
descriptor: the U-Net to the L2-normalised map), and timed with onnxruntime on every pyramid level the engine runs
(the levels of strek::model::pyramid) plus the descriptor at full size. strek is timed by the same example
(`cpu_timing time`), which reports the median of each stage.

    pip install torch onnx onnxruntime onnxscript safetensors numpy
    python3 tools/onnx/compare.py [--weights PATH] [--sizes 640x480 1280x720] [--iters 5] [--threads 2] [--rounds 2]

The "networks" columns compare like with like: detector convolutions + orientation pooling over all levels, plus
the descriptor network. strek's full extraction adds gray conversion, pyramid resampling, NMS/top-k and sampling.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "train"))
from strek_train.layers import orientation_pool  # noqa: E402
from strek_train.reference import descriptor_forward, detector_forward  # noqa: E402


def load(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    with safe_open(str(path), framework="pt") as f:
        config = json.loads(f.metadata()["strek.config"])
        tensors = {k: f.get_tensor(k).float() for k in f.keys()}
    return tensors, config


class Detector(torch.nn.Module):
    def __init__(self, tensors, config):
        super().__init__()
        self.tensors, self.config = tensors, config

    def forward(self, x):
        return orientation_pool(detector_forward(self.tensors, self.config, x)[0])


class Descriptor(torch.nn.Module):
    def __init__(self, tensors, config):
        super().__init__()
        self.tensors, self.config = tensors, config

    def forward(self, x):
        return descriptor_forward(self.tensors, self.config, x)


def export(model: torch.nn.Module, path: Path, outputs: list[str]) -> None:
    x = torch.zeros(1, 1, 96, 128)
    axes = {"image": {2: "height", 3: "width"}}
    try:  # the TorchScript exporter handles dynamic sizes of this model directly
        torch.onnx.export(model, (x,), str(path), input_names=["image"], output_names=outputs, dynamic_axes=axes,
                          opset_version=17, dynamo=False)
    except Exception as e:  # noqa: BLE001 - newer torch without it: the dynamo exporter
        print(f"TorchScript export failed ({e}); using the dynamo exporter", file=sys.stderr)
        h, w = torch.export.Dim("height", min=32), torch.export.Dim("width", min=32)
        torch.onnx.export(model, (x,), str(path), input_names=["image"], output_names=outputs,
                          dynamic_shapes={"x": {2: h, 3: w}}, dynamo=True)


def pyramid(config: dict, w: int, h: int) -> list[tuple[int, int]]:
    """Level sizes as strek::model::pyramid computes them (f32 rounding of w*s matches for these sizes)."""
    r = len(config["detector"]["fields"]) * (config["detector"]["kernel"] - 1) + 1
    inf = config["inference"]
    levels = []
    for i, s in enumerate(inf["scales"]):
        lw, lh = (w, h) if i == 0 else (round(float(np.float32(w) * np.float32(s))), round(float(np.float32(h) * np.float32(s))))
        if (i > 0 and min(lw, lh) < inf["min_level_side"]) or lw < r or lh < r:
            continue
        levels.append((lw, lh))
    return levels


def median_time(fn, iters: int) -> float:
    fn()  # warm-up: ORT plans each new input shape on first use
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def time_onnx(det_path: Path, desc_path: Path, config: dict, sizes, iters: int, threads: int) -> dict:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    det = ort.InferenceSession(str(det_path), opts, providers=["CPUExecutionProvider"])
    desc = ort.InferenceSession(str(desc_path), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    results = {}
    for w, h in sizes:
        levels = [rng.standard_normal((1, 1, lh, lw), dtype=np.float32) for lw, lh in pyramid(config, w, h)]
        detector = median_time(lambda: [det.run(None, {"image": x}) for x in levels], iters)
        descriptor = median_time(lambda: desc.run(None, {"image": levels[0]}), iters)
        results[(w, h)] = {"detector": detector, "descriptor": descriptor}
    return results


def time_strek(weights: Path, sizes, iters: int, threads: int) -> dict:
    cmd = ["cargo", "run", "--release", "--quiet", "--example", "cpu_timing", "--", "time", "--weights", str(weights),
           *[f"{w}x{h}" for w, h in sizes], "--iters", str(iters)]
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return {tuple(r["size"]): r for r in rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--sizes", nargs="+", default=["640x480", "1280x720"])
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="alternating ORT / strek rounds; the best round counts")
    ap.add_argument("--keep", type=Path, default=None, help="folder to keep the .onnx files in")
    args = ap.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    work = Path(args.keep or tempfile.mkdtemp(prefix="strek-onnx-"))
    work.mkdir(parents=True, exist_ok=True)
    weights = args.weights or ROOT / "weights" / "strek.safetensors"
    if not weights.exists():
        weights = work / "random.safetensors"
        subprocess.run(["cargo", "run", "--release", "--quiet", "--example", "cpu_timing", "--", "weights", str(weights)],
                       cwd=ROOT, check=True)
    tensors, config = load(weights)
    torch.set_num_threads(args.threads)
    det_path, desc_path = work / "detector.onnx", work / "descriptor.onnx"
    with torch.no_grad():
        export(Detector(tensors, config), det_path, ["score", "orientation"])
        export(Descriptor(tensors, config), desc_path, ["descriptors"])
    check_export(det_path, desc_path, tensors, config)

    # Rounds alternate ORT and strek so that both see the same share of a busy machine; each keeps its least
    # disturbed round (the smallest median).
    onnx_times, strek_times = {}, {}
    for _ in range(args.rounds):
        for size, t in time_onnx(det_path, desc_path, config, sizes, args.iters, args.threads).items():
            old = onnx_times.get(size)
            if old is None or t["detector"] + t["descriptor"] < old["detector"] + old["descriptor"]:
                onnx_times[size] = t
        for size, t in time_strek(weights, sizes, args.iters, args.threads).items():
            old = strek_times.get(size)
            if old is None or t["total"] < old["total"]:
                strek_times[size] = t

    print(f"weights: {weights}; onnxruntime {ort.__version__} (CPUExecutionProvider, {args.threads} threads); "
          f"strek {next(iter(strek_times.values()))['device']}; medians of {args.iters} runs, best of {args.rounds} "
          f"alternating rounds, seconds")
    head = ("size", "ORT det", "ORT desc", "ORT nets", "strek det", "strek desc", "strek nets", "strek full", "speedup")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for size in sizes:
        o, s = onnx_times[size], strek_times[size]
        o_nets = o["detector"] + o["descriptor"]
        s_nets = s["stages"]["detector"] + s["stages"]["descriptor"]
        cells = [f"{size[0]}x{size[1]}", f"{o['detector']:.3f}", f"{o['descriptor']:.3f}", f"{o_nets:.3f}",
                 f"{s['stages']['detector']:.3f}", f"{s['stages']['descriptor']:.3f}", f"{s_nets:.3f}",
                 f"{s['total']:.3f}", f"{o_nets / s_nets:.2f}x"]
        print("| " + " | ".join(cells) + " |")
    gflop = {size: 2 * (strek_times[size]["detector_macs"] + strek_times[size]["descriptor_macs"]) / 1e9 for size in sizes}
    print("model GFLOP per image: " + ", ".join(f"{w}x{h}: {g:.1f}" for (w, h), g in gflop.items()))
    print("speedup = ORT networks / strek networks (detector over all levels + descriptor); > 1 means strek is faster")


def check_export(det_path: Path, desc_path: Path, tensors, config) -> None:
    """The ONNX graphs compute what PyTorch computes (a small input, a loose tolerance: this is a timing tool)."""
    x = torch.randn(1, 1, 67, 83)
    with torch.no_grad():
        score, _ = Detector(tensors, config)(x)
        desc = Descriptor(tensors, config)(x)
    got_score = ort.InferenceSession(str(det_path), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
    got_desc = ort.InferenceSession(str(desc_path), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
    assert np.allclose(got_score, score.numpy(), atol=1e-3 * max(1.0, float(score.abs().max()))), "detector export differs"
    assert np.allclose(got_desc, desc.numpy(), atol=1e-3), "descriptor export differs"


if __name__ == "__main__":
    main()
