"""kornia, hloc's features.h5 and pycolmap, against the real packages."""

import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

import strek
import strek.hloc
import strek.kornia
from conftest import TUM_CAMERA, textured


def rotated_pair(session):
    image = textured(10, 160, 160)
    return session.extract(image), session.extract(np.ascontiguousarray(np.rot90(image)))


def test_lafs_give_back_strek_positions_scales_and_orientations(session):
    import kornia.feature as KF
    f = session.extract(textured(11))
    laf = strek.kornia.to_laf(f)
    assert laf.shape == (1, len(f), 2, 3)
    np.testing.assert_allclose(KF.get_laf_center(laf)[0].numpy(), f.keypoints, atol=1e-4)
    np.testing.assert_allclose(KF.get_laf_scale(laf)[0, :, 0, 0].numpy(), f.scales, rtol=1e-5)
    degrees = KF.get_laf_orientation(laf)[0, :, 0].numpy()
    wrapped = (np.radians(degrees) - f.orientations + np.pi) % (2 * np.pi) - np.pi
    np.testing.assert_allclose(wrapped, 0, atol=1e-4)
    two = strek.kornia.to_laf([f[:10], f[10:20]])
    assert two.shape == (2, 10, 2, 3)
    with pytest.raises(ValueError):
        strek.kornia.to_laf([f[:10], f[:11]])


def test_kornia_matchers_and_ransac_run_on_strek_features(session):
    import kornia.feature as KF
    from kornia.geometry.ransac import RANSAC
    a, b = rotated_pair(session)
    ta, tb = strek.kornia.to_torch(a), strek.kornia.to_torch(b)
    _, mnn = KF.match_mnn(ta["descriptors"], tb["descriptors"])
    _, smnn = KF.match_smnn(ta["descriptors"], tb["descriptors"], 0.95)
    ours = session.match(a, b)
    assert len(mnn) == len(ours)
    assert {tuple(p) for p in mnn.numpy()} == {tuple(p) for p in ours}
    assert 0 < len(smnn) <= len(mnn)
    h, inliers = RANSAC("homography", inl_th=2.0, max_iter=20, seed=0)(
        ta["keypoints"][mnn[:, 0]], tb["keypoints"][mnn[:, 1]])
    # the quarter turn of a 160 x 160 image: (x, y) -> (y, 159 - x)
    turn = torch.tensor([[0.0, 1.0, 0.0], [-1.0, 0.0, 159.0], [0.0, 0.0, 1.0]])
    assert inliers.sum() > 0.5 * len(mnn)
    torch.testing.assert_close(h / h[2, 2], turn, atol=0.05, rtol=0.01)


def test_features_h5_reads_back_the_way_hloc_reads_it(tmp_path, session):
    from PIL import Image
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for k, name in enumerate(["a.png", "b.png", "sub/c.png"]):
        Image.fromarray(textured(20 + k)).save(images / name)
    (images / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "features.h5"
    run = lambda: subprocess.run([sys.executable, "-m", "strek", "extract", str(images), "-o", str(out), "--device",
                                  "cpu", "--recursive"], capture_output=True, text=True)
    first = run()
    assert first.returncode == 1 and "broken.png" in first.stderr and "3 written" in first.stderr, first.stderr
    with h5py.File(out, "r") as fd:
        for name in ["a.png", "b.png", "sub/c.png"]:
            # as hloc.utils.io.get_keypoints / get_matches' readers do
            keypoints = fd[name]["keypoints"].__array__()
            descriptors = fd[name]["descriptors"].__array__()
            size = fd[name]["image_size"].__array__()
            expected = session.extract(images / name)
            np.testing.assert_array_equal(keypoints, expected.keypoints)
            np.testing.assert_array_equal(descriptors, expected.descriptors.T)
            assert tuple(size) == expected.image_size
            assert descriptors.shape == (session.dim, len(keypoints))
        assert strek.hloc.names(fd) == ["a.png", "b.png", "sub/c.png"]
    again = run()
    assert "0 written, 3 skipped" in again.stderr, again.stderr


def test_pycolmap_maps_a_database_written_from_python(tmp_path, session, tum_frames):
    """Features extracted in Python, matched, verified and written with strek.ray's pieces, mapped by pycolmap."""
    import pycolmap
    names = sorted(p.name for p in tum_frames.iterdir())
    features = [session.extract(tum_frames / n) for n in names]
    writer = strek.ColmapWriter(tmp_path / "db.db", TUM_CAMERA)
    ids = [writer.add_image(n, f) for n, f in zip(names, features)]
    for k, (i, j) in enumerate(strek.pair_list("sequential:3", len(names))):
        m = session.match(features[i], features[j])
        writer.add_pair(ids[i], ids[j], m, strek.verify_pair(features[i], features[j], m, k, TUM_CAMERA))
    writer.finish()
    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads = 2
    models = pycolmap.incremental_mapping(str(tmp_path / "db.db"), str(tum_frames), str(tmp_path / "sparse"),
                                          options=options)
    best = max(models.values(), key=lambda r: r.num_reg_images())
    assert best.num_reg_images() >= 12
    assert best.compute_mean_reprojection_error() < 2.0


def test_the_h5_command_takes_scales(tmp_path):
    from PIL import Image
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(textured(7)).save(images / "a.png")
    out = tmp_path / "features.h5"
    done = subprocess.run([sys.executable, "-m", "strek", "extract", str(images), "-o", str(out), "--device", "cpu",
                           "--scales", "1,2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with h5py.File(out, "r") as fd:
        assert (fd["a.png"]["scales"].__array__() == 0.5).any(), "keypoints of the doubled level"
