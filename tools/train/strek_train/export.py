"""Export: `python3 -m strek_train.export --detector RUN/checkpoint.pt [--descriptor RUN2/checkpoint.pt]
-o weights/strek.safetensors [--golden tests/golden/golden.safetensors]`.

Writes the weights file of docs/model.md (dense expanded filters, batch norm folded, f32, `strek.format` and
`strek.config` with provenance in the metadata; training hyper-parameters in `strek.train`) and the golden vectors:
a synthetic 8-bit image and the float64 outputs of the exported model on it."""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch
from safetensors.torch import save_file

from .basis import rot90
from .data import synthetic_image
from .config import descriptor_topology
from .descriptor import build_descriptor
from .reference import expected_tensor_names, run_model
from .train import build_detector, command_line, git_commit

GOLDEN_SIZE = (47, 61)  # odd sizes on purpose: valid padding, floor pooling and resampling edges all show
GOLDEN_SEED = 47061


def check_rot90_structure(name: str, w: torch.Tensor, n: int, lifting: bool) -> None:
    """docs/model.md: W[g*N + (r+N/4)%N, f*N + (s+N/4)%N] == rot90(W[g*N + r, f*N + s]), exactly."""
    c_out, c_in, k, _ = w.shape
    o = torch.arange(c_out)
    o_rot = (o // n) * n + (o % n + n // 4) % n
    if lifting:
        ok = torch.equal(w[o_rot], rot90(w))
    else:
        c = torch.arange(c_in)
        c_rot = (c // n) * n + (c % n + n // 4) % n
        ok = torch.equal(w[o_rot][:, c_rot], rot90(w))
    if not ok:
        raise ValueError(f"{name} does not have the exact 90-degree structure of docs/model.md")


def golden_image() -> np.ndarray:
    """The golden input: a procedural pattern (no photo), 8-bit gray [47, 61]."""
    g = synthetic_image(np.random.default_rng(GOLDEN_SEED), *GOLDEN_SIZE)
    return np.round(g * 255).astype(np.uint8)


def golden_keypoints(h: int, w: int) -> torch.Tensor:
    """Fixed level-0 keypoints [K, 3] (x, y, orientation) for the golden descriptors: interior and border
    positions (clamped sampling), sub-pixel positions, orientations on bins, between bins and just under 2 pi."""
    two_pi = 2 * math.pi
    return torch.tensor([
        [w / 2, h / 2, 0.0],
        [10.0, 7.0, two_pi / 8],
        [w - 1.0, h - 1.0, 1.0],
        [0.0, 0.0, 5.5],
        [17.25, 30.75, two_pi * 3.5 / 8],
        [33.6, 12.4, math.pi],
        [45.0, 40.0, two_pi - 1e-6],
        [3.5, h - 2.5, 2.3],
        [w - 4.2, 5.9, 4.0],
        [25.0, 22.0, math.pi / 2],
    ], dtype=torch.float64)


def export_tensors(detector, descriptor) -> dict[str, torch.Tensor]:
    tensors = {}
    n = detector.group_order
    for layer, (w, b) in zip(detector.topology.convs, detector.export()):
        w, b = w.float().contiguous(), b.float().contiguous()
        check_rot90_structure(f"{layer.tensor_name}.weight", w, n, lifting=layer.lifting)
        tensors[f"{layer.tensor_name}.weight"], tensors[f"{layer.tensor_name}.bias"] = w, b
    topo = descriptor.topology
    exported = descriptor.export()
    for layer in topo.convs:
        w, b = (t.float().contiguous() for t in exported[layer.name])
        if topo.group:  # version 2: every layer is equivariant, the engine checks the same structure
            check_rot90_structure(f"{layer.tensor_name}.weight", w, topo.group_order, lifting=layer.lifting)
        tensors[f"{layer.tensor_name}.weight"], tensors[f"{layer.tensor_name}.bias"] = w, b
    return tensors


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python3 -m strek_train.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--detector", required=True, help="detector run's checkpoint.pt")
    p.add_argument("--descriptor", help="descriptor run's checkpoint.pt (without it: a random, untrained descriptor)")
    p.add_argument("-o", "--output", required=True, help="weights file to write")
    p.add_argument("--golden", help="golden vectors file to write (e.g. tests/golden/golden.safetensors)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random descriptor when none is given")
    args = p.parse_args(argv)

    det_ckpt = torch.load(args.detector, map_location="cpu", weights_only=False)
    if det_ckpt["stage"] != "detector":
        raise SystemExit(f"{args.detector} is a {det_ckpt['stage']} checkpoint, not a detector one")
    cfg = det_ckpt["model_config"]
    detector = build_detector(det_ckpt["train_config"], cfg)
    detector.load_state_dict(det_ckpt["model"])
    detector.eval()

    if args.descriptor:
        desc_ckpt = torch.load(args.descriptor, map_location="cpu", weights_only=False)
        desc_cfg = desc_ckpt["model_config"]
        for key in ("group_order", "input"):
            if desc_cfg[key] != cfg[key]:
                raise SystemExit(f"the descriptor checkpoint's {key} differs from the detector checkpoint's")
        # The descriptor checkpoint says which kind and topology it holds.
        cfg = {**cfg, "descriptor": desc_cfg["descriptor"]}
        descriptor = build_descriptor(cfg)
        descriptor.load_state_dict(desc_ckpt["model"])
        desc_steps = desc_ckpt["step"]
        desc_note = f"trained {desc_steps} steps ({args.descriptor}, {desc_ckpt['command']})"
    else:
        torch.manual_seed(args.seed)
        descriptor = build_descriptor(cfg)
        desc_steps = 0
        desc_note = f"random initialisation (untrained, seed {args.seed}): descriptors are meaningless"
    descriptor.eval()

    tensors = export_tensors(detector, descriptor)
    assert sorted(tensors) == sorted(expected_tensor_names(cfg))
    config = dict(cfg)
    config["provenance"] = {
        "data": det_ckpt["data"],
        "steps": det_ckpt["step"] + desc_steps,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": git_commit(),
        "command": command_line("strek_train.export"),
        "detector": f"trained {det_ckpt['step']} steps ({args.detector}, {det_ckpt['command']}, trainer commit "
                    f"{det_ckpt['commit']})",
        "descriptor": desc_note,
    }
    train_meta = {"detector": det_ckpt["train_config"],
                  "descriptor": desc_ckpt["train_config"] if args.descriptor else None}
    metadata = {"strek.format": "1", "strek.config": json.dumps(config), "strek.train": json.dumps(train_meta)}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    save_file(tensors, args.output, metadata=metadata)
    print(f"wrote {args.output}: {len(tensors)} tensors; detector {det_ckpt['step']} steps; descriptor: {desc_note}")

    if args.golden:
        write_golden(args.golden, tensors, config, detector, descriptor)


def write_golden(path: str, tensors: dict, config: dict, detector, descriptor) -> None:
    image = torch.from_numpy(golden_image())
    # Version 2's descriptors depend on the keypoint's orientation: the golden file pins the aligned sampling too.
    keypoints = golden_keypoints(*image.shape) if descriptor_topology(config).group else None
    outputs = run_model(tensors, config, image, keypoints=keypoints)
    # The exported tensors must reproduce the modules (up to the f32 rounding of the export).
    with torch.no_grad():
        x = ((image.double() / 255 - config["input"]["mean"]) / config["input"]["std"])[None, None]
        module_logits = detector.double()(x)[0]
        module_desc = descriptor.double()(x)[0]
    detector.float(), descriptor.float()
    for name, a, b in [("group_logits", outputs["group_logits"], module_logits),
                       ("descriptor_map", outputs["descriptor_map"], module_desc)]:
        err = float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
        if err > 1e-4:
            raise SystemExit(f"golden: exported {name} differs from the module by {err:.2e} (relative)")
    golden = {"image": image.contiguous(), **{k: v.contiguous() for k, v in outputs.items()}}
    if keypoints is not None:
        golden["keypoints"] = keypoints.contiguous()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(golden, path, metadata={"strek.format": "1", "strek.config": json.dumps(config),
                                      "strek.golden": "float64 outputs of the exported model (tools/train "
                                                      "strek_train.reference) on `image` (8-bit gray)"})
    print(f"wrote {path}: image {list(image.shape)}, " + ", ".join(f"{k} {list(v.shape)}" for k, v in outputs.items()))


if __name__ == "__main__":
    main()
