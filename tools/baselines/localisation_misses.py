#!/usr/bin/env python3
"""Why are matches correct within 3 px but not within 1 px? A diagnostic for the image pairs of HPatches-format sets.

Usage:
    strek eval ROOT... --save-features FEATS            # or any program's npz files in that layout
    python3 tools/baselines/localisation_misses.py FEATS ROOT... [--k 1000]

For each pair (1, k) of every sequence it takes the protocol's matches (design.md: top-k keypoints, those whose
reprojection falls inside the other image, mutual nearest neighbours of the descriptors) and sorts the ones whose
reprojection error is at most 3 px:
    within 1 px     what mma@1 counts
    localisation    over 1 px, and the matched keypoint is the one nearest to the reprojection: the two detections
                    of the same point disagree (the detector's peak or its sub-pixel read-out)
    neighbour, 1px  over 1 px, and another keypoint lies within 1 px of the reprojection: the descriptor chose a
                    neighbour (a twin on the next pyramid level, say) over a precise partner
    neighbour       over 1 px, another keypoint is nearer but not within 1 px
It also prints the share within 1 px by the scale of the first image's keypoint. Counts are pooled over the pairs,
so its ratio within-1/within-3 differs a little from the harness's mean of per-pair mma@1 / mma@3. Images are
shrunk as `strek eval` shrinks them (the npz files' `image_size`), with its pixel-centre map.
"""

import argparse
import collections
import pathlib
import sys

import cv2
import numpy as np


def sequences(root: pathlib.Path):
    if (root / "H_1_2").exists():
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "H_1_2").exists())


def original_size(seq: pathlib.Path, stem: str) -> tuple[int, int]:
    path = next(p for p in seq.iterdir() if p.stem == stem and not p.name.startswith("H_"))
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        sys.exit(f"cannot read {path}")
    return image.shape[1], image.shape[0]


def shrink_map(original: tuple[int, int], evaluated) -> np.ndarray:
    """The harness's map from original to evaluated pixels (centres at integers): x' = (x + 0.5) s - 0.5."""
    sx, sy = evaluated[0] / original[0], evaluated[1] / original[1]
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])


def project(h: np.ndarray, p: np.ndarray) -> np.ndarray:
    q = np.c_[p, np.ones(len(p))] @ h.T
    return q[:, :2] / q[:, 2:]


def inside(p: np.ndarray, size) -> np.ndarray:
    return (p[:, 0] >= -0.5) & (p[:, 1] >= -0.5) & (p[:, 0] <= size[0] - 0.5) & (p[:, 1] <= size[1] - 0.5)


def classify_pair(f1, f2, h: np.ndarray, k: int, counts: collections.Counter, by_scale: dict) -> None:
    p1, p2 = f1["keypoints"][:k].astype(np.float64), f2["keypoints"][:k].astype(np.float64)
    d1, d2 = f1["descriptors"][:k].astype(np.float32), f2["descriptors"][:k].astype(np.float32)
    q1, q2 = project(h, p1), project(np.linalg.inv(h), p2)
    i1 = np.flatnonzero(inside(q1, f2["image_size"]))
    i2 = np.flatnonzero(inside(q2, f1["image_size"]))
    if len(i1) == 0 or len(i2) == 0:
        return
    similarity = d1[i1] @ d2[i2].T
    best2, best1 = similarity.argmax(1), similarity.argmax(0)
    for m in np.flatnonzero(best1[best2] == np.arange(len(i1))):
        a, b = i1[m], i2[best2[m]]
        distances = np.linalg.norm(p2 - q1[a], axis=1)
        if distances[b] > 3:
            continue
        counts["within 3 px"] += 1
        scale = round(float(f1["scales"][a]), 1)
        by_scale[scale][0] += 1
        if distances[b] <= 1:
            counts["within 1 px"] += 1
            by_scale[scale][1] += 1
        elif distances.argmin() == b:
            counts["localisation"] += 1
        elif distances.min() <= 1:
            counts["neighbour, 1px"] += 1
        else:
            counts["neighbour"] += 1


def scale_bins(by_scale: dict) -> list:
    """(label, [matches, within 1 px]) per scale; continuous scales (SIFT's sizes) go to four quartile bins."""
    rows = sorted(by_scale.items())
    if len(rows) <= 8:
        return rows
    scales = np.array([s for s, _ in rows])
    counts = np.array([c for _, c in rows])
    edges = np.quantile(np.repeat(scales, counts[:, 0]), [0.25, 0.5, 0.75])
    which = np.searchsorted(edges, scales)  # s <= edges[i] falls in bin i
    labels = [f"<= {e:.1f}" for e in edges] + [f"> {edges[-1]:.1f}"]
    return [(labels[b], counts[which == b].sum(0).tolist()) for b in range(4) if (which == b).any()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("features", type=pathlib.Path, help="FEATS/<set>/<sequence>/<image>.npz")
    parser.add_argument("roots", type=pathlib.Path, nargs="+", help="the sets (HPatches layout)")
    parser.add_argument("--k", type=int, default=1000)
    args = parser.parse_args(argv)
    for root in args.roots:
        counts, by_scale = collections.Counter(), collections.defaultdict(lambda: [0, 0])
        for seq in sequences(root):
            folder = args.features / root.name / seq.name
            if not (folder / "1.npz").exists():
                sys.exit(f"no features for {seq} under {folder}")
            f1 = np.load(folder / "1.npz")
            shrink1 = shrink_map(original_size(seq, "1"), f1["image_size"])
            for h_file in sorted(seq.glob("H_1_*")):
                stem = h_file.name.split("_")[2]
                f2 = np.load(folder / f"{stem}.npz")
                shrink2 = shrink_map(original_size(seq, stem), f2["image_size"])
                h = shrink2 @ np.loadtxt(h_file) @ np.linalg.inv(shrink1)
                classify_pair(f1, f2, h, args.k, counts, by_scale)
        within3 = max(1, counts["within 3 px"])
        misses = max(1, within3 - counts["within 1 px"])
        print(f"{root.name} ({args.features}): {counts['within 3 px']} matches within 3 px, "
              f"{counts['within 1 px'] / within3:.3f} of them within 1 px; the others: "
              + ", ".join(f"{name} {counts[name]} ({counts[name] / misses:.2f})"
                          for name in ("localisation", "neighbour, 1px", "neighbour")))
        print("  within 1 px by keypoint scale: "
              + ", ".join(f"{s}: {good / n:.2f} of {n}" for s, (n, good) in scale_bins(by_scale)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
