"""The Python package: numpy in, numpy out, the engine's errors as exceptions, the same features as the CLI."""

import subprocess
import threading

import numpy as np
import pytest

import strek
from conftest import REPO, textured


def test_every_public_name_is_there():
    for name in strek.__all__:
        assert getattr(strek, name) is not None, name


def test_extract_from_numpy_gives_consistent_arrays(session):
    f = session.extract(textured(0))
    n = len(f)
    assert n > 20
    assert f.keypoints.shape == (n, 2) and f.keypoints.dtype == np.float32
    assert f.scores.shape == f.orientations.shape == f.scales.shape == (n,)
    assert f.descriptors.shape == (n, session.dim) and f.descriptors.dtype == np.float32
    assert np.allclose(np.linalg.norm(f.descriptors, axis=1), 1, atol=1e-4)
    assert f.image_size == (128, 96)
    assert (f.keypoints[:, 0] >= 0).all() and (f.keypoints[:, 0] <= 127).all()
    assert (np.diff(f.scores) <= 0).all(), "best keypoint first"


def test_sample_types_and_layouts_agree(session):
    gray = textured(1)
    reference = session.extract(gray)
    same = [gray[:, :, None], np.repeat(gray[:, :, None], 3, axis=2), gray.astype(np.uint16) * 257,
            gray.astype(np.float32) / 255, np.asfortranarray(gray)]
    for image in same:
        f = session.extract(image)
        assert len(f) == len(reference)
        np.testing.assert_allclose(f.keypoints, reference.keypoints, atol=1e-3)


def test_path_input_equals_array_input(session, tmp_path):
    from PIL import Image
    gray = textured(2)
    Image.fromarray(gray).save(tmp_path / "a.png")
    a, b = session.extract(gray), session.extract(tmp_path / "a.png")
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    np.testing.assert_array_equal(a.descriptors, b.descriptors)


def test_batch_equals_single(session):
    images = [textured(3), textured(4, 80, 100)]
    for one, many in zip([session.extract(i) for i in images], session.extract_batch(images)):
        np.testing.assert_array_equal(one.keypoints, many.keypoints)
        np.testing.assert_array_equal(one.descriptors, many.descriptors)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((4, 5, 6), np.uint8), "H x W x C"),
    (np.zeros((4,), np.uint8), "H x W"),
    (np.full((8, 8), 2.0, np.float32), "[0, 1]"),
    (np.full((8, 8), np.nan, np.float32), "[0, 1]"),
    (np.zeros((8, 8), np.int8), "numpy array"),
    ("/nonexistent/image.png", "cannot open"),
    (42, "numpy array"),
])
def test_bad_images_raise_the_engines_message(session, bad, message):
    with pytest.raises(strek.StrekError, match=message.replace("[", r"\[").replace("]", r"\]")):
        session.extract(bad)


def test_truncated_file_raises_and_the_session_still_works(session, tmp_path):
    from PIL import Image
    Image.fromarray(textured(5)).save(tmp_path / "a.jpg", quality=90)
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:len(data) // 2])
    with pytest.raises(strek.StrekError):
        session.extract(tmp_path / "cut.jpg")
    assert len(session.extract(tmp_path / "a.jpg")) > 0


def test_bad_weights_and_devices_raise():
    with pytest.raises(strek.StrekError, match="nonexistent"):
        strek.Session("cpu", weights="/nonexistent.safetensors")
    with pytest.raises(strek.StrekError, match="unknown device"):
        strek.Session("tpu")


def test_scales_upsample_and_bad_scales_raise():
    image = textured(4)
    up = strek.Session("cpu", scales=[1, 2]).extract(image)
    assert (up.scales == 0.5).any(), "keypoints of the doubled level"
    with pytest.raises(strek.StrekError, match="must lie in"):
        strek.Session("cpu", scales=[1, 3])
    with pytest.raises(strek.StrekError, match="start with 1.0"):
        strek.Session("cpu", scales=[2, 1])


def test_match_is_mutual_nearest_on_the_same_device(session):
    f = session.extract(textured(6))
    m = session.match(f, f)
    assert m.dtype == np.int64 and m.shape == (len(f), 2)
    np.testing.assert_array_equal(m[:, 0], m[:, 1])
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 16)).astype(np.float32)
    b = rng.normal(size=(40, 16)).astype(np.float32)
    sim = a @ b.T
    expected = [(i, int(sim[i].argmax())) for i in range(50) if int(sim[:, sim[i].argmax()].argmax()) == i]
    assert [tuple(p) for p in session.match(a, b)] == expected
    assert len(session.match(a, b, ratio=0.5)) <= len(expected)
    assert session.match(a[:0], b).shape == (0, 2)
    with pytest.raises(strek.StrekError, match="dimensions differ"):
        session.match(a, b[:, :8])
    with pytest.raises(strek.StrekError, match="ratio"):
        session.match(a, b, ratio=1.5)


def test_extraction_releases_the_gil(session):
    """A Python thread keeps running while another extracts."""
    image = textured(7, 480, 640)
    ticks, done = [0], threading.Event()

    def count():
        while not done.is_set():
            ticks[0] += 1

    counter = threading.Thread(target=count)
    counter.start()
    before = ticks[0]
    session.extract(image)
    during = ticks[0] - before
    done.set()
    counter.join()
    assert during > 1000, f"the counting thread ran {during} times during an extraction"


def test_features_equal_the_clis(session, tmp_path):
    from PIL import Image
    Image.fromarray(textured(8)).save(tmp_path / "a.png")
    subprocess.run(["cargo", "run", "--release", "--quiet", "--", "--device", "cpu", "extract", str(tmp_path / "a.png"),
                    "-o", str(tmp_path / "out")], cwd=REPO, check=True)
    cli = np.load(tmp_path / "out" / "a.npz")
    ours = session.extract(tmp_path / "a.png")
    np.testing.assert_array_equal(cli["keypoints"], ours.keypoints)
    np.testing.assert_array_equal(cli["descriptors"], ours.descriptors)


def test_a_headless_machine_without_a_runtime_folder_gets_no_window_system_errors():
    env = {k: v for k, v in __import__("os").environ.items() if k != "XDG_RUNTIME_DIR"}
    out = subprocess.run([__import__("sys").executable, "-c", "import strek; strek.Session('auto')"], env=env,
                         capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    assert "XDG_RUNTIME_DIR" not in out.stderr, out.stderr


def test_f16_storage_on_a_gpu_keeps_the_keypoints():
    """`f16=True` on a GPU with SHADER_F16 (lavapipe has it): the keypoints of f32 storage, descriptors close."""
    try:
        plain = strek.Session(device="gpu", max_keypoints=100)
    except strek.StrekError:
        pytest.skip("no GPU adapter")
    try:
        half = strek.Session(device="gpu", max_keypoints=100, f16=True)
    except strek.StrekError as e:
        assert "SHADER_F16" in str(e)
        pytest.skip(str(e))
    assert "f16" in half.device
    image = textured(5)
    a, b = plain.extract(image), half.extract(image)
    assert len(a) > 20
    near = np.abs(a.keypoints[:, None, :] - b.keypoints[None, :, :]).max(axis=2) <= 0.1
    kept = near.any(axis=1)
    assert kept.mean() >= 0.97, f"{kept.sum()} of {len(a)} keypoints kept"
    j = near.argmax(axis=1)[kept]
    cosines = (a.descriptors[kept] * b.descriptors[j]).sum(axis=1)
    assert cosines.min() >= 0.99
