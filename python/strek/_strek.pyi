"""Type stubs of the compiled module (python/src/lib.rs); the public API is re-exported by `strek`."""

from typing import Any, Optional, Sequence, Union
import os

import numpy as np

__version__: str

class StrekError(Exception):
    """An error of the strek engine: bad input, weights or device."""

class Session:
    def __init__(self, device: str = "auto", weights: Optional[str] = None, max_keypoints: Optional[int] = None,
                 max_memory: Optional[int] = None, f16: bool = False,
                 scales: Optional[Sequence[float]] = None) -> None: ...
    @property
    def device(self) -> str: ...
    @property
    def dim(self) -> int: ...
    def extract(self, image: Union[np.ndarray, str, os.PathLike]) -> dict[str, Any]: ...
    def extract_batch(self, images: Sequence[Union[np.ndarray, str, os.PathLike]]) -> list[dict[str, Any]]: ...
    def match(self, desc1: np.ndarray, desc2: np.ndarray, ratio: Optional[float] = None) -> np.ndarray: ...

class ColmapWriter:
    """A COLMAP database written as `strek colmap` writes it; nothing appears at `path` before `finish`."""
    def __init__(self, path: Union[str, os.PathLike], camera: str = "auto") -> None: ...
    def add_image(self, name: str, features: Any) -> int: ...
    def add_pair(self, image1: int, image2: int, matches: np.ndarray, geometry: dict[str, Any]) -> None: ...
    def finish(self) -> None: ...

def verify_pair(features1: Any, features2: Any, matches: np.ndarray, index: int, camera: str = "auto",
                min_inliers: int = 15) -> dict[str, Any]:
    """Verifies a pair's matches as `strek colmap` does; `index` (the pair's place in the pair list) seeds RANSAC.
    Returns config (1 failed, 2 calibrated, 3 uncalibrated), inliers (K x 2 int64), F and E (3 x 3 or None)."""

def pair_list(pairs: str, n: int) -> list[tuple[int, int]]:
    """The pairs (i, j), i < j, of n images: "exhaustive" or "sequential:N", in `strek colmap`'s order."""

def list_images(folder: Union[str, os.PathLike], recursive: bool = False) -> list[tuple[str, str]]:
    """The image files of a folder as `strek extract` finds them: (name relative to it, path), sorted by name."""
