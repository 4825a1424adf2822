"""Writes the held-out validation pairs as an HPatches-layout folder for `strek eval`:
`python3 -m strek_train.valset OUT [--size 320] [--seed 7] [--view-scale LO HI]`.

Each of the last 100 photos (never trained on) gives OUT/<stem>/1.png, 2.png and H_1_2: two views made exactly as
training pairs are (full-circle rotation, scale, perspective, photometric changes) but larger, so that the engine's
pyramid, NMS and top-k run as on real images. Inference settings are checked here, not on the evaluation sets."""
from __future__ import annotations

import argparse
import os

import cv2
import numpy as np

from .data import PairConfig, default_data_dir, load_gray, make_pair, split_images


def write_valset(out: str, data_dir: str, size: int, seed: int, view_scale=PairConfig.view_scale) -> int:
    _, validation = split_images(data_dir)
    cfg = PairConfig(size=size, source_scale=(1.0, 1.0), view_scale=tuple(view_scale))
    for i, path in enumerate(validation):
        rng = np.random.default_rng([seed, i])
        first, second, h12 = make_pair(load_gray(path), rng, cfg)
        folder = os.path.join(out, os.path.splitext(os.path.basename(path))[0])
        os.makedirs(folder, exist_ok=True)
        for name, view in (("1.png", first), ("2.png", second)):
            cv2.imwrite(os.path.join(folder, name), np.round(view * 255).astype(np.uint8))
        np.savetxt(os.path.join(folder, "H_1_2"), h12)
    return len(validation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--data", default=default_data_dir())
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--view-scale", type=float, nargs=2, default=list(PairConfig.view_scale), metavar=("LO", "HI"),
                        help="per-view scale range, as in training (wider: a harder set)")
    args = parser.parse_args()
    count = write_valset(args.out, args.data, args.size, args.seed, args.view_scale)
    print(f"{count} pairs of {args.size}x{args.size} views in {args.out}")


if __name__ == "__main__":
    main()
