"""strek: S-TREK rotation-equivariant local features for Python.

    import strek
    session = strek.Session()                 # a hardware GPU when there is one, else the CPU path
    features = session.extract(image)         # numpy H x W (x C) uint8 / uint16 / float in [0, 1], or a path
    matches = session.match(features.descriptors, other.descriptors)

Keypoints are in pixels of the image, x right and y down, with the centre of the top-left pixel at (0, 0) (as
OpenCV, kornia and hloc count); orientations are radians, counter-clockwise as the image is displayed; scales are
1 at full resolution and the pyramid factor above. Descriptors are unit vectors (N x D float32).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Union

import numpy as np


def _quiet_window_system_probe() -> None:
    """Mesa's Vulkan and GL drivers probe the window system while adapters are listed and, on a headless machine,
    print "error: XDG_RUNTIME_DIR is invalid or not set" for each, though strek opens no window. A private runtime
    folder (what a desktop session provides) keeps those lines away, as the `strek` command does; an existing,
    usable setting is kept."""
    current = os.environ.get("XDG_RUNTIME_DIR")
    if os.name != "posix" or (current and os.path.isdir(current)):
        return
    import tempfile
    folder = os.path.join(tempfile.gettempdir(), f"strek-runtime-{os.getuid()}")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)
    except OSError:
        return
    os.environ["XDG_RUNTIME_DIR"] = folder


_quiet_window_system_probe()

from . import _strek  # noqa: E402
from ._strek import ColmapWriter, StrekError, list_images, pair_list, verify_pair  # noqa: E402

__all__ = ["Session", "Features", "StrekError", "ColmapWriter", "verify_pair", "pair_list", "list_images",
           "__version__"]
__version__ = _strek.__version__

Image = Union[np.ndarray, str, "os.PathLike[str]"]


@dataclass
class Features:
    """The features of one image, best keypoint first."""

    keypoints: np.ndarray  # N x 2 float32, (x, y) pixels
    scores: np.ndarray  # N float32, detector probability
    orientations: np.ndarray  # N float32, radians
    scales: np.ndarray  # N float32
    descriptors: np.ndarray  # N x D float32, unit rows
    image_size: tuple  # (width, height)

    def __len__(self) -> int:
        return len(self.keypoints)

    def __getitem__(self, index) -> "Features":
        """The keypoints at `index` (a slice, mask or index array) with everything that belongs to them."""
        return Features(self.keypoints[index], self.scores[index], self.orientations[index], self.scales[index],
                        self.descriptors[index], self.image_size)


class Session:
    """One device (`"auto"`: a hardware GPU when there is one, else the CPU path; `"gpu"`; `"cpu"`) with an
    extractor and a matcher on it. `weights`: a .safetensors file (default: the weights shipped in the package).
    `max_keypoints`: at most this many per image (default: the weights' config). `max_memory`: the CPU path's
    memory budget in bytes. `f16`: on a GPU with SHADER_F16, store activations and filters in f16 (arithmetic stays
    f32; an error on other GPUs; the CPU path ignores it). `scales`: pyramid scales instead of the weights' own (the
    first 1, none above 2; levels above 1 upsample the image and localise keypoints more finely at more detector
    work, e.g. [1, 2, 1.414, 0.707, 0.5, 0.354, 0.25]). Extraction and matching release the GIL, so threads may
    share a session (calls on one session run one at a time)."""

    def __init__(self, device: str = "auto", weights: Optional[Union[str, "os.PathLike[str]"]] = None,
                 max_keypoints: Optional[int] = None, max_memory: Optional[int] = None, f16: bool = False,
                 scales: Optional[Sequence[float]] = None):
        self._session = _strek.Session(device, None if weights is None else os.fspath(weights), max_keypoints,
                                       max_memory, f16, None if scales is None else [float(s) for s in scales])

    @property
    def device(self) -> str:
        """What extracts: the GPU adapter, or the CPU path's threads and kernel."""
        return self._session.device

    @property
    def dim(self) -> int:
        """Descriptor dimension of the weights."""
        return self._session.dim

    def extract(self, image: Image) -> Features:
        """Features of one image: a numpy array (H x W or H x W x C, C 1-4 as gray, gray + alpha, RGB, RGBA;
        uint8, uint16, or float in [0, 1]) or a path to an image file."""
        return Features(**self._session.extract(image))

    def extract_batch(self, images: Sequence[Image]) -> list[Features]:
        """Features of several images in one submission (the GPU runs them together)."""
        return [Features(**f) for f in self._session.extract_batch(list(images))]

    def match(self, desc1: Union[np.ndarray, Features], desc2: Union[np.ndarray, Features],
              ratio: Optional[float] = None) -> np.ndarray:
        """Mutual nearest neighbours of two descriptor sets (N x D, M x D float32, or Features), on the session's
        device: a K x 2 int64 array of (row in desc1, row in desc2), in order of the rows of desc1. `ratio` < 1
        keeps only matches whose nearest neighbour is clearly closer than the second (the ratio test)."""
        return self._session.match(_descriptors(desc1), _descriptors(desc2), ratio)

    def __repr__(self) -> str:
        return f"strek.Session({self.device})"


def _descriptors(d: Union[np.ndarray, Features]) -> np.ndarray:
    d = d.descriptors if isinstance(d, Features) else d
    return np.ascontiguousarray(d, dtype=np.float32)
