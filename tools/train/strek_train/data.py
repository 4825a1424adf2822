"""Training pairs: photos warped by random homographies, with photometric changes; on the fly, deterministic.

Every sample is a pure function of (seed, step, index): a resumed run sees exactly the data it would have seen."""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch

VALIDATION_COUNT = 100  # the last 100 photos by file name are held out
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".ppm", ".bmp")


def default_data_dir() -> str:
    """../shared/data/train/imagenet-sample relative to the repository root (tools/train/strek_train/..)."""
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
    return os.path.join(os.path.dirname(root), "shared", "data", "train", "imagenet-sample")


def split_images(data_dir: str) -> tuple[list[str], list[str]]:
    """(training paths, validation paths): sorted by file name, the last VALIDATION_COUNT are validation."""
    names = sorted(n for n in os.listdir(data_dir) if n.lower().endswith(IMAGE_EXTENSIONS))
    if len(names) <= VALIDATION_COUNT:
        raise ValueError(f"{data_dir}: {len(names)} images, need more than {VALIDATION_COUNT}")
    paths = [os.path.join(data_dir, n) for n in names]
    return paths[:-VALIDATION_COUNT], paths[-VALIDATION_COUNT:]


def to_gray(image: np.ndarray) -> np.ndarray:
    """docs/model.md: g = (0.299 R + 0.587 G + 0.114 B) / 255 (8-bit) or / 65535 (16-bit); gray used as is.

    `image` is in OpenCV's BGR(A) channel order. Returns float32 in [0, 1]."""
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    img = image.astype(np.float64)
    if img.ndim == 3 and img.shape[2] >= 3:
        img = 0.299 * img[..., 2] + 0.587 * img[..., 1] + 0.114 * img[..., 0]
    elif img.ndim == 3:
        img = img[..., 0]
    return (img / scale).astype(np.float32)


def load_gray(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise OSError(f"cannot read image {path}")
    return to_gray(image)


def normalize(gray: np.ndarray | torch.Tensor, cfg: dict):
    return (gray - cfg["input"]["mean"]) / cfg["input"]["std"]


@dataclass
class PairConfig:
    size: int = 128
    source_scale: tuple[float, float] = (0.5, 1.0)  # the photo is first resized by a factor in this range
    view_scale: tuple[float, float] = (0.8, 1.25)  # per view, log-uniform
    perspective: float = 0.08  # corner jitter, fraction of the view size
    translation: float = 0.1  # per view, fraction of the view size
    brightness: float = 0.1
    contrast: tuple[float, float] = (0.7, 1.4)
    gamma: tuple[float, float] = (0.7, 1.4)
    noise: float = 0.02  # max std of additive Gaussian noise
    blur_probability: float = 0.4
    blur_sigma: float = 1.2

    def to_dict(self) -> dict:
        return asdict(self)


def _log_uniform(rng: np.random.Generator, lo_hi) -> float:
    lo, hi = lo_hi
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def view_to_source(rng: np.random.Generator, cfg: PairConfig, centre: np.ndarray) -> np.ndarray:
    """Homography from view pixels to source pixels: the view square, its corners jittered (perspective), scaled,
    rotated by an angle uniform over the full circle and translated near `centre`."""
    s = cfg.size
    half = (s - 1) / 2
    corners = np.array([[0, 0], [s - 1, 0], [s - 1, s - 1], [0, s - 1]], np.float64)
    local = corners - half + rng.uniform(-cfg.perspective, cfg.perspective, (4, 2)) * s
    theta = rng.uniform(0, 2 * math.pi)
    c, si = math.cos(theta), math.sin(theta)
    rot = np.array([[c, si], [-si, c]])  # counter-clockwise as displayed, y down
    src = (local @ rot.T) * _log_uniform(rng, cfg.view_scale) + centre + rng.uniform(-1, 1, 2) * cfg.translation * s
    return cv2.getPerspectiveTransform(corners.astype(np.float32), src.astype(np.float32)).astype(np.float64)


def photometric(rng: np.random.Generator, cfg: PairConfig, view: np.ndarray) -> np.ndarray:
    v = view
    if rng.uniform() < cfg.blur_probability:
        v = cv2.GaussianBlur(v, (0, 0), rng.uniform(0.3, cfg.blur_sigma))
    v = np.clip(v, 0, 1) ** _log_uniform(rng, cfg.gamma)
    v = (v - v.mean()) * _log_uniform(rng, cfg.contrast) + v.mean() + rng.uniform(-cfg.brightness, cfg.brightness)
    v = v + rng.normal(0, rng.uniform(0, cfg.noise), v.shape)
    return np.clip(v, 0, 1).astype(np.float32)


def make_pair(gray: np.ndarray, rng: np.random.Generator, cfg: PairConfig):
    """Two views [size, size] (gray in [0, 1]) of one photo and H_1_2 mapping view-1 pixels to view-2 pixels.

    Pixels outside the photo are filled by reflection: both views are warps of the same reflected plane, so the
    homography stays exact there too."""
    f = rng.uniform(*cfg.source_scale)
    src = cv2.resize(gray, None, fx=f, fy=f, interpolation=cv2.INTER_AREA) if f < 1 else gray
    h, w = src.shape
    reach = cfg.size * 0.75 * cfg.view_scale[1]  # about the radius a rotated view covers
    cx = rng.uniform(reach, w - reach) if w > 2 * reach else (w - 1) / 2
    cy = rng.uniform(reach, h - reach) if h > 2 * reach else (h - 1) / 2
    centre = np.array([cx, cy])
    views, maps = [], []
    for _ in range(2):
        m = view_to_source(rng, cfg, centre)
        warped = cv2.warpPerspective(src, m, (cfg.size, cfg.size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                     borderMode=cv2.BORDER_REFLECT_101)
        views.append(photometric(rng, cfg, warped))
        maps.append(m)
    h12 = np.linalg.inv(maps[1]) @ maps[0]
    return views[0], views[1], h12 / h12[2, 2]


class PairSource:
    """Batches of pairs from a list of images (paths or in-memory gray arrays), deterministic under a seed."""

    def __init__(self, images: list, pair_cfg: PairConfig, model_cfg: dict, seed: int = 0):
        self.images, self.pair_cfg, self.model_cfg, self.seed = images, pair_cfg, model_cfg, seed

    def _gray(self, i: int) -> np.ndarray:
        item = self.images[i]
        return load_gray(item) if isinstance(item, str) else item

    def pair(self, step: int, index: int, image_index: int | None = None):
        rng = np.random.default_rng([self.seed, step, index])
        i = int(rng.integers(len(self.images))) if image_index is None else image_index
        return make_pair(self._gray(i), rng, self.pair_cfg)

    def batch(self, step: int, batch_size: int, device="cpu", image_indices=None):
        """(view1 [B,1,S,S], view2 [B,1,S,S]) normalised, H_1_2 [B,3,3] float64."""
        v1, v2, hs = [], [], []
        for b in range(batch_size):
            a, bb, h = self.pair(step, b, None if image_indices is None else image_indices[b])
            v1.append(a)
            v2.append(bb)
            hs.append(h)
        t = lambda vs: normalize(torch.from_numpy(np.stack(vs))[:, None], self.model_cfg).to(device)
        return t(v1), t(v2), torch.from_numpy(np.stack(hs)).to(device)


def synthetic_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A procedural gray image in [0, 1] (rectangles, ellipses, lines, texture): for tests and the golden input,
    which must not depend on any photo."""
    img = np.full((height, width), rng.uniform(0.3, 0.7), np.float32)
    for _ in range(int(height * width / 300) + 4):
        colour = float(rng.uniform(0, 1))
        x, y = int(rng.integers(width)), int(rng.integers(height))
        kind = rng.integers(3)
        if kind == 0:
            cv2.rectangle(img, (x, y), (x + int(rng.integers(3, 20)), y + int(rng.integers(3, 20))), colour, -1)
        elif kind == 1:
            cv2.ellipse(img, (x, y), (int(rng.integers(2, 12)), int(rng.integers(2, 12))), float(rng.uniform(0, 180)),
                        0, 360, colour, -1)
        else:
            end = (int(rng.integers(width)), int(rng.integers(height)))
            cv2.line(img, (x, y), end, colour, int(rng.integers(1, 3)))
    img += rng.normal(0, 0.02, img.shape).astype(np.float32)
    return np.clip(cv2.GaussianBlur(img, (0, 0), 0.7), 0, 1)
