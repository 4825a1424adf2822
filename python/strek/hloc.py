"""Features files in hloc's layout (`features.h5`): one group per image name (its path relative to the image folder,
`/`-separated) holding `keypoints` (N x 2 float32, pixels with the centre of the top-left pixel at (0, 0), hloc's
convention), `scores` (N), `descriptors` (D x N, hloc's transposed layout) and `image_size` ((width, height)).
strek adds `orientations` (radians) and `scales`, which hloc ignores. hloc's matchers and its COLMAP import read
the file as they read their own extractors' files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Union

import h5py
import numpy as np

from . import Features

__all__ = ["write", "read", "names"]

PathLike = Union[str, "os.PathLike[str]"]


def write(h5: h5py.File, name: str, features: Features) -> None:
    """Stores `features` under `name`, replacing what was there."""
    if name in h5:
        del h5[name]
    group = h5.create_group(name)
    group.create_dataset("keypoints", data=features.keypoints.astype(np.float32))
    group.create_dataset("scores", data=features.scores.astype(np.float32))
    group.create_dataset("descriptors", data=np.ascontiguousarray(features.descriptors.T, dtype=np.float32))
    group.create_dataset("image_size", data=np.asarray(features.image_size, dtype=np.int64))
    group.create_dataset("orientations", data=features.orientations.astype(np.float32))
    group.create_dataset("scales", data=features.scales.astype(np.float32))


def read(h5: h5py.File, name: str) -> Features:
    """The features stored under `name`."""
    g = h5[name]
    return Features(keypoints=g["keypoints"][()], scores=g["scores"][()], orientations=g["orientations"][()],
                    scales=g["scales"][()], descriptors=np.ascontiguousarray(g["descriptors"][()].T),
                    image_size=tuple(int(v) for v in g["image_size"][()]))


def names(h5: h5py.File) -> list[str]:
    """Every image name in the file (groups that hold keypoints), sorted."""
    found = []

    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Group) and "keypoints" in obj:
            found.append(name)

    h5.visititems(visit)
    return sorted(found)
