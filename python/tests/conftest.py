"""Shared fixtures: generated images (strek's demo scenes written by the CLI would need the binary; these are
random smooth textures), the TUM frames of ../shared when present."""

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
TUM = REPO.parent / "shared" / "data" / "eval" / "sequences" / "tum-fr3-office"
TUM_CAMERA = "pinhole:535.4,539.2,320.1,247.6"


def textured(seed: int, height: int = 96, width: int = 128) -> np.ndarray:
    """A random image with structure at several scales (blocks of random gray levels, summed), uint8."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width))
    for cell in (4, 8, 16, 32):
        coarse = rng.random((height // cell + 1, width // cell + 1))
        image += np.kron(coarse, np.ones((cell, cell)))[:height, :width]
    return (255 * image / image.max()).astype(np.uint8)


@pytest.fixture(scope="session")
def session():
    import strek
    return strek.Session("cpu")


@pytest.fixture(scope="session")
def tum_frames():
    if not TUM.is_dir():
        pytest.skip(f"{TUM} not found")
    return TUM
