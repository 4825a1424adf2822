#!/usr/bin/env python3
"""OpenCV SIFT and ORB features in strek's npz layout (design.md), for `strek eval --features`.

Usage:
    strek eval ROOT --export-images IMAGES [--rotate ...]    # the exact images strek evaluates
    python3 tools/baselines/opencv_features.py IMAGES OUT --method sift [--k 1000]
    strek eval ROOT --features sift=OUT/ [--rotate ...]

Every image under IMAGES (png, jpg, ppm, ...) gives OUT/<same relative path>.npz with
    keypoints    float32 (N, 2)  x, y in pixels, pixel centres at integers (OpenCV's convention)
    scores       float32 (N)     the detector response, sorted descending
    orientations float32 (N)     radians in [0, 2*pi), counter-clockwise as displayed
    scales       float32 (N)     OpenCV's keypoint size
    descriptors  float32 (N, D)  L2-normalised: SIFT as is (D = 128); ORB's 256 bits as +-1/16 (D = 256), so that
                                 the Euclidean distance between two of them is a function of the Hamming distance
                                 and nearest neighbours are the same
    image_size   int32 [w, h]
Needs opencv-python (or opencv-contrib-python) and numpy.
"""

import argparse
import math
import pathlib
import sys

import cv2
import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".tif", ".tiff", ".bmp", ".webp"}


def detector(method: str, k: int):
    if method == "sift":
        # nfeatures keeps the strongest k; the response sort below makes the order explicit
        return cv2.SIFT_create(nfeatures=k)
    if method == "orb":
        # ORB_create(nfeatures=k) shares k out among the pyramid levels; ask for many and keep the k of highest
        # score below, as the protocol says
        return cv2.ORB_create(nfeatures=max(10 * k, 10000))
    raise ValueError(f"unknown method {method!r}: use sift or orb")


def as_unit_float(method: str, descriptors: np.ndarray) -> np.ndarray:
    if method == "orb":
        bits = np.unpackbits(descriptors.astype(np.uint8), axis=1).astype(np.float32)
        d = (2.0 * bits - 1.0) / math.sqrt(bits.shape[1])
    else:
        d = descriptors.astype(np.float32)
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    return d.astype(np.float32)


def features(method: str, k: int, gray: np.ndarray) -> dict:
    keypoints, descriptors = detector(method, k).detectAndCompute(gray, None)
    h, w = gray.shape[:2]
    n = len(keypoints)
    dim = 256 if method == "orb" else 128
    if n == 0 or descriptors is None:
        return {
            "keypoints": np.zeros((0, 2), np.float32),
            "scores": np.zeros(0, np.float32),
            "orientations": np.zeros(0, np.float32),
            "scales": np.zeros(0, np.float32),
            "descriptors": np.zeros((0, dim), np.float32),
            "image_size": np.array([w, h], np.int32),
        }
    scores = np.array([kp.response for kp in keypoints], np.float32)
    order = np.argsort(-scores, kind="stable")[:k]
    kps = [keypoints[i] for i in order]
    # OpenCV's angle is in degrees, clockwise as displayed (y down); strek's is counter-clockwise
    orientation = np.array([(-math.radians(kp.angle)) % (2 * math.pi) if kp.angle >= 0 else 0.0 for kp in kps], np.float32)
    return {
        "keypoints": np.array([kp.pt for kp in kps], np.float32).reshape(-1, 2),
        "scores": scores[order],
        "orientations": orientation,
        "scales": np.array([kp.size for kp in kps], np.float32),
        "descriptors": as_unit_float(method, descriptors[order]),
        "image_size": np.array([w, h], np.int32),
    }


def read_gray(path: pathlib.Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise OSError(f"{path}: cannot read the image")
    if image.dtype == np.uint16:
        image = (image / 257.0).round().astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    if image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return image


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", type=pathlib.Path, help="folder of images (searched recursively)")
    parser.add_argument("out", type=pathlib.Path, help="output folder; mirrors the image tree")
    parser.add_argument("--method", choices=["sift", "orb"], required=True)
    parser.add_argument("--k", type=int, default=1000, help="keypoints per image (the strongest)")
    args = parser.parse_args(argv)
    paths = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        print(f"{args.images}: no image found", file=sys.stderr)
        return 1
    for path in paths:
        out = (args.out / path.relative_to(args.images)).with_suffix(".npz")
        out.parent.mkdir(parents=True, exist_ok=True)
        f = features(args.method, args.k, read_gray(path))
        tmp = out.with_suffix(".tmp.npz")
        np.savez(tmp, **f)
        tmp.replace(out)
        print(f"{path}: {len(f['scores'])} keypoints -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
