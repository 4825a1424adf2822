"""Training pairs: photos warped by random homographies, with photometric changes; on the fly, deterministic.

Every sample is a pure function of (seed, step, index): a resumed run sees exactly the data it would have seen."""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np
import torch

VALIDATION_COUNT = 100  # the last 100 photos by file name are held out
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".ppm", ".bmp")


HIRES_VALIDATION_COUNT = 2  # the last 2 full-resolution photos by file name are held out


def _shared_train_dir(name: str) -> str:
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
    return os.path.join(os.path.dirname(root), "shared", "data", "train", name)


def default_data_dir() -> str:
    """../shared/data/train/imagenet-sample relative to the repository root (tools/train/strek_train/..)."""
    return _shared_train_dir("imagenet-sample")


def default_hires_dir() -> str:
    """../shared/data/train/hires: camera-resolution photos, cut at scale 1 for full-resolution views."""
    return _shared_train_dir("hires")


def split_images(data_dir: str, held_out: int = VALIDATION_COUNT) -> tuple[list[str], list[str]]:
    """(training paths, validation paths): sorted by file name, the last `held_out` are validation."""
    names = sorted(n for n in os.listdir(data_dir) if n.lower().endswith(IMAGE_EXTENSIONS))
    if len(names) <= held_out:
        raise ValueError(f"{data_dir}: {len(names)} images, need more than {held_out}")
    paths = [os.path.join(data_dir, n) for n in names]
    return paths[:-held_out], paths[-held_out:]


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
class RealPhotometric:
    """Camera-like changes (`PairConfig.augment = "real"`), in the order they happen in a camera: optics (blur,
    motion blur), light (shading, gamma, contrast, brightness, low light), sensor (signal-dependent and additive
    noise), encoding (JPEG).  Ranges from design.md's review of held-out views (noise 0.05 and darkening x0.3
    measurably cost repeatability; the basic changes never reached them)."""
    blur_probability: float = 0.3
    blur_sigma: tuple[float, float] = (0.3, 2.0)
    motion_blur_probability: float = 0.15
    motion_blur_length: tuple[int, int] = (3, 11)  # px, a line kernel at a random angle
    shading_probability: float = 0.5
    shading: float = 0.5  # max amplitude of a linear gradient and of a vignette, relative to the signal
    gamma: tuple[float, float] = (0.6, 1.6)  # log-uniform
    contrast: tuple[float, float] = (0.3, 2.5)  # log-uniform, about the view's mean
    brightness: float = 0.25  # uniform offset in +-brightness
    low_light_probability: float = 0.15
    low_light: tuple[float, float] = (0.05, 0.3)  # the signal is multiplied by this (log-uniform) before the noise
    # Noise std at a pixel of value v: sqrt(k * v + s^2), s = noise * u1^1.5 (additive), k = shot_noise * u2^3
    # (signal-dependent; its std at v = 1 is sqrt(shot_noise) * u2^1.5), u1, u2 uniform in [0, 1]: every level up
    # to the maximum is drawn, the clean end more often (a view under heavy noise carries little to learn from).
    noise: float = 0.08
    shot_noise: float = 0.01
    jpeg_probability: float = 0.5
    jpeg_quality: tuple[int, int] = (20, 95)  # uniform integer quality


AUGMENTATIONS = ("basic", "real")


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
    # "basic": the photometric changes above (the runs before model v2); "real": RealPhotometric instead.
    augment: str = "basic"
    real: RealPhotometric = field(default_factory=RealPhotometric)
    # Share of pairs cut at scale 1 from the full-resolution photos (PairSource's `hires` list).
    hires_fraction: float = 0.0

    def __post_init__(self):
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment {self.augment!r} is not one of {AUGMENTATIONS}")
        if isinstance(self.real, dict):  # read back from a checkpoint's train_config
            self.real = RealPhotometric(**self.real)

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
    if cfg.augment == "real":
        return photometric_real(rng, cfg.real, view)
    return photometric_basic(rng, cfg, view)


def photometric_basic(rng: np.random.Generator, cfg: PairConfig, view: np.ndarray) -> np.ndarray:
    """The original changes; their draws and order are kept as they were, so older runs resume on the same data."""
    v = view
    if rng.uniform() < cfg.blur_probability:
        v = cv2.GaussianBlur(v, (0, 0), rng.uniform(0.3, cfg.blur_sigma))
    v = np.clip(v, 0, 1) ** _log_uniform(rng, cfg.gamma)
    v = (v - v.mean()) * _log_uniform(rng, cfg.contrast) + v.mean() + rng.uniform(-cfg.brightness, cfg.brightness)
    v = v + rng.normal(0, rng.uniform(0, cfg.noise), v.shape)
    return np.clip(v, 0, 1).astype(np.float32)


def motion_blur(v: np.ndarray, length: int, angle: float) -> np.ndarray:
    """Mean along a line segment of `length` pixels through the centre at `angle` (a straight camera shake)."""
    k = length if length % 2 else length + 1
    kernel = np.zeros((k, k), np.float32)
    c = (k - 1) / 2
    dx, dy = math.cos(angle) * (length - 1) / 2, -math.sin(angle) * (length - 1) / 2
    # Sub-pixel line end points (shift 4 bits): the kernel turns smoothly with the angle.
    p0 = (int(round((c - dx) * 16)), int(round((c - dy) * 16)))
    p1 = (int(round((c + dx) * 16)), int(round((c + dy) * 16)))
    cv2.line(kernel, p0, p1, 1.0, 1, cv2.LINE_AA, shift=4)
    kernel /= kernel.sum()
    return cv2.filter2D(v, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


def shading_field(rng: np.random.Generator, shape, amplitude: float) -> np.ndarray:
    """A smooth multiplicative illumination: 1 + a linear gradient in a random direction - a vignette."""
    h, w = shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    phi = rng.uniform(0, 2 * math.pi)
    gradient = rng.uniform(0, amplitude) * (math.cos(phi) * xx + math.sin(phi) * yy)
    vignette = rng.uniform(0, amplitude) * (xx**2 + yy**2) / 2
    return np.maximum(1 + gradient - vignette, 0.05).astype(np.float32)


def jpeg_roundtrip(v: np.ndarray, quality: int) -> np.ndarray:
    """8-bit quantisation and JPEG re-encoding at `quality` (libjpeg is deterministic)."""
    u8 = np.round(np.clip(v, 0, 1) * 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0


def photometric_real(rng: np.random.Generator, p: RealPhotometric, view: np.ndarray) -> np.ndarray:
    """Camera-like changes (RealPhotometric).  Every draw is made whether or not its change applies, so that the
    stream of random numbers (and the next view's) does not depend on earlier coin flips' outcomes."""
    v = view.astype(np.float32)
    blur = rng.uniform() < p.blur_probability
    sigma = rng.uniform(*p.blur_sigma)
    if blur:
        v = cv2.GaussianBlur(v, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    motion = rng.uniform() < p.motion_blur_probability
    length, angle = int(rng.integers(p.motion_blur_length[0], p.motion_blur_length[1] + 1)), rng.uniform(0, math.pi)
    if motion:
        v = motion_blur(v, length, angle)
    shade = rng.uniform() < p.shading_probability
    field_ = shading_field(rng, v.shape, p.shading)
    if shade:
        v = v * field_
    v = np.clip(v, 0, 1) ** _log_uniform(rng, p.gamma)
    mean = v.mean()
    v = (v - mean) * _log_uniform(rng, p.contrast) + mean + rng.uniform(-p.brightness, p.brightness)
    v = np.clip(v, 0, 1)
    dark = rng.uniform() < p.low_light_probability
    dark_factor = _log_uniform(rng, p.low_light)
    if dark:
        v = v * dark_factor
    shot = p.shot_noise * rng.uniform() ** 3
    additive = p.noise * rng.uniform() ** 1.5
    noise = rng.standard_normal(v.shape)
    v = v + noise * np.sqrt(shot * v + additive**2)
    jpeg = rng.uniform() < p.jpeg_probability
    quality = int(rng.integers(p.jpeg_quality[0], p.jpeg_quality[1] + 1))
    if jpeg:
        v = jpeg_roundtrip(v, quality)
    return np.clip(v, 0, 1).astype(np.float32)


def make_pair(gray: np.ndarray, rng: np.random.Generator, cfg: PairConfig, source_scale=None):
    """Two views [size, size] (gray in [0, 1]) of one photo and H_1_2 mapping view-1 pixels to view-2 pixels.

    Pixels outside the photo are filled by reflection: both views are warps of the same reflected plane, so the
    homography stays exact there too.  `source_scale` overrides cfg.source_scale (full-resolution crops: (1, 1))."""
    f = rng.uniform(*(source_scale or cfg.source_scale))
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
    """Batches of pairs from a list of images (paths or in-memory gray arrays), deterministic under a seed.

    With `hires` photos and `pair_cfg.hires_fraction` > 0, that share of pairs is cut at scale 1 from them (their
    decoded gray images are cached as 8-bit: a camera-resolution JPEG takes a tenth of a second to decode)."""

    def __init__(self, images: list, pair_cfg: PairConfig, model_cfg: dict, seed: int = 0, hires: list | None = None):
        self.images, self.pair_cfg, self.model_cfg, self.seed = images, pair_cfg, model_cfg, seed
        self.hires = list(hires or [])
        if pair_cfg.hires_fraction > 0 and not self.hires:
            raise ValueError("hires_fraction > 0 needs full-resolution photos (hires)")
        self._cache: dict[str, np.ndarray] = {}

    def _gray(self, i: int) -> np.ndarray:
        item = self.images[i]
        return load_gray(item) if isinstance(item, str) else item

    def _hires_gray(self, i: int) -> np.ndarray:
        item = self.hires[i]
        if not isinstance(item, str):
            return item
        if item not in self._cache:
            self._cache[item] = np.round(load_gray(item) * 255).astype(np.uint8)
        return self._cache[item].astype(np.float32) / 255.0

    def pair(self, step: int, index: int, image_index: int | None = None):
        rng = np.random.default_rng([self.seed, step, index])
        # The hires coin is only drawn when hires pairs are asked for: older runs keep their random stream.
        if self.pair_cfg.hires_fraction > 0 and image_index is None and rng.uniform() < self.pair_cfg.hires_fraction:
            i = int(rng.integers(len(self.hires)))
            return make_pair(self._hires_gray(i), rng, self.pair_cfg, source_scale=(1.0, 1.0))
        i = int(rng.integers(len(self.images))) if image_index is None else image_index
        return make_pair(self._gray(i), rng, self.pair_cfg)

    def hires_pair(self, step: int, index: int, hires_index: int):
        """A full-resolution pair from hires photo `hires_index` (validation sets)."""
        rng = np.random.default_rng([self.seed, step, index])
        return make_pair(self._hires_gray(hires_index), rng, self.pair_cfg, source_scale=(1.0, 1.0))

    def batch(self, step: int, batch_size: int, device="cpu", image_indices=None):
        """(view1 [B,1,S,S], view2 [B,1,S,S]) normalised, H_1_2 [B,3,3] float64."""
        pairs = [self.pair(step, b, None if image_indices is None else image_indices[b]) for b in range(batch_size)]
        return self._stack(pairs, device)

    def hires_batch(self, step: int, count: int, device="cpu"):
        """`count` full-resolution pairs, spread evenly over the hires photos (validation)."""
        return self._stack([self.hires_pair(step, b, b % len(self.hires)) for b in range(count)], device)

    def _stack(self, pairs, device):
        t = lambda vs: normalize(torch.from_numpy(np.stack(vs))[:, None], self.model_cfg).to(device)
        return t([p[0] for p in pairs]), t([p[1] for p in pairs]), torch.from_numpy(np.stack([p[2] for p in pairs])).to(device)


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
