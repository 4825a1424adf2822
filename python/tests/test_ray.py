"""strek.ray on a local Ray (2 CPUs, the CPU path): the same features and database as the CLI, resumption, and a
worker killed mid-run."""

import os
import shutil
import sqlite3
import subprocess
import sys

import h5py
import numpy as np
import pytest

ray = pytest.importorskip("ray")
import strek.hloc  # noqa: E402
import strek.ray  # noqa: E402
from conftest import REPO, TUM_CAMERA, textured  # noqa: E402

quiet = lambda line: None


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def cli(*args, check=True):
    subprocess.run(["cargo", "run", "--release", "--quiet", "--", "--device", "cpu", *map(str, args)], cwd=REPO,
                   check=check, capture_output=True)


def ray_features(work):
    """Every image's features from the shard files."""
    out = {}
    for path in sorted((work / "features").glob("shard-*.h5")):
        with h5py.File(path, "r") as h5:
            out.update({name: strek.hloc.read(h5, name) for name in strek.hloc.names(h5)})
    return out


def test_features_from_ray_equal_the_clis_on_200_images(tmp_path):
    from PIL import Image
    images = tmp_path / "images"
    images.mkdir()
    for k in range(200):
        Image.fromarray(textured(100 + k, 72, 96)).save(images / f"img{k:03d}.png")
    (images / "zz-broken.png").write_bytes(b"not a png")
    result = strek.ray.extract(str(images), str(tmp_path / "work"), workers=2, shard_size=16, device="cpu",
                               log=quiet)
    assert (result["written"], result["failed"], result["shards"]) == (200, 1, 13)
    cli("extract", images, "-o", tmp_path / "cli", check=False)  # fails on the broken file, writes the rest
    ours = ray_features(tmp_path / "work")
    assert sorted(ours) == [f"img{k:03d}.png" for k in range(200)]
    for name, f in ours.items():
        expected = np.load(tmp_path / "cli" / name.replace(".png", ".npz"))
        for field in ("keypoints", "scores", "orientations", "scales", "descriptors"):
            np.testing.assert_array_equal(getattr(f, field), expected[field], err_msg=f"{name} {field}")

    # a shard lost (or never finished) is redone; the others are skipped
    (tmp_path / "work" / "features" / "shard-00003.h5").unlink()
    again = strek.ray.extract(str(images), str(tmp_path / "work"), workers=2, shard_size=16, device="cpu", log=quiet)
    assert again["shards"] == 1 and again["written"] == 16
    redone = ray_features(tmp_path / "work")
    np.testing.assert_array_equal(redone["img050.png"].descriptors, ours["img050.png"].descriptors)
    with pytest.raises(SystemExit, match="other images or settings"):
        strek.ray.extract(str(images), str(tmp_path / "work"), shard_size=8, device="cpu", log=quiet)


def database_rows(path):
    """Every row strek writes, table by table, in a fixed order."""
    with sqlite3.connect(path) as db:
        return {table: db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
                for table in ("cameras", "images", "keypoints", "descriptors", "matches", "two_view_geometries")}


@pytest.fixture(scope="module")
def tum_databases(tmp_path_factory, tum_frames):
    """The TUM frames' database from the CLI, from Ray, and from Ray with a worker killed mid-extraction."""
    root = tmp_path_factory.mktemp("tum")
    cli("colmap", tum_frames, "-o", root / "cli.db", "--camera", TUM_CAMERA)
    strek.ray.colmap(str(tum_frames), str(root / "work"), str(root / "ray.db"), camera=TUM_CAMERA,
                     workers=2, shard_size=4, device="cpu", block=40, log=quiet)
    marker = root / "killed"
    os.environ["STREK_RAY_KILL_ONCE"] = str(marker)
    try:
        strek.ray.colmap(str(tum_frames), str(root / "work-killed"), str(root / "killed.db"),
                         camera=TUM_CAMERA, workers=2, shard_size=4, device="cpu", block=40, log=quiet)
    finally:
        del os.environ["STREK_RAY_KILL_ONCE"]
    assert marker.exists(), "no worker was killed"
    return root


def test_the_ray_database_equals_the_clis(tum_databases):
    ours, theirs = database_rows(tum_databases / "ray.db"), database_rows(tum_databases / "cli.db")
    assert len(ours["images"]) == 17 and len(ours["two_view_geometries"]) == 136
    for table in ours:
        assert ours[table] == theirs[table], table


def test_tum_features_from_ray_equal_the_clis(tum_databases, tum_frames):
    cli("extract", tum_frames, "-o", tum_databases / "cli-features")
    ours = ray_features(tum_databases / "work")
    assert len(ours) == 17
    for name, f in ours.items():
        expected = np.load(tum_databases / "cli-features" / name.replace(".png", ".npz"))
        for field in ("keypoints", "scores", "orientations", "scales", "descriptors"):
            np.testing.assert_array_equal(getattr(f, field), expected[field], err_msg=f"{name} {field}")


def test_a_worker_killed_mid_run_changes_nothing(tum_databases):
    assert database_rows(tum_databases / "killed.db") == database_rows(tum_databases / "ray.db")


def test_pycolmap_maps_the_ray_database(tum_databases, tum_frames, tmp_path):
    # on a copy: pycolmap upgrades the schema of a database it opens
    shutil.copy(tum_databases / "ray.db", tmp_path / "ray.db")
    out = subprocess.run([sys.executable, str(REPO / "tools/colmap/reconstruct.py"), str(tmp_path / "ray.db"),
                          str(tum_frames), "--label", "strek-ray", "--min-registered", "12",
                          "--max-reprojection", "2.0", "--min-points", "300"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_matching_resumes_and_refuses_other_settings(tum_databases):
    work = tum_databases / "work"
    blocks = sorted((work / "matches").glob("block-*.npz"))
    assert len(blocks) == 4  # 136 pairs in blocks of 40
    blocks[1].unlink()
    result = strek.ray.match(str(work), "exhaustive", block=40, camera=TUM_CAMERA, log=quiet)
    assert result["blocks"] == 1
    strek.ray.merge(str(work), str(tum_databases / "resumed.db"), TUM_CAMERA, log=quiet)
    assert database_rows(tum_databases / "resumed.db") == database_rows(tum_databases / "ray.db")
    with pytest.raises(SystemExit, match="other settings"):
        strek.ray.match(str(work), "sequential:2", block=40, camera=TUM_CAMERA, log=quiet)


def test_a_list_of_paths_and_a_pairs_file_give_the_same_database(tum_databases, tum_frames, tmp_path):
    """Images named by a list file and pairs named by an hloc pairs file, in the order of sequential:2."""
    names = sorted(p.name for p in tum_frames.iterdir())
    listing = tmp_path / "images.txt"
    listing.write_text("".join(f"{tum_frames / n}\n" for n in names))
    work = tmp_path / "work"
    strek.ray.extract(str(listing), str(work), workers=2, shard_size=4, device="cpu", log=quiet)
    # images of a list are named relative to the folder they share: here the names of the folder run
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("".join(f"{names[i]} {names[j]}\n"
                             for i, j in strek.pair_list("sequential:2", len(names))))
    strek.ray.match(str(work), str(pairs), block=40, camera=TUM_CAMERA, log=quiet)
    strek.ray.merge(str(work), str(tmp_path / "listed.db"), TUM_CAMERA, log=quiet)
    folder_work = tmp_path / "folder-work"
    shutil.copytree(tum_databases / "work" / "features", folder_work / "features")
    shutil.copy(tum_databases / "work" / "manifest.json", folder_work / "manifest.json")
    strek.ray.match(str(folder_work), "sequential:2", block=40, camera=TUM_CAMERA, log=quiet)
    strek.ray.merge(str(folder_work), str(tmp_path / "folder.db"), TUM_CAMERA, log=quiet)
    listed, folder = database_rows(tmp_path / "listed.db"), database_rows(tmp_path / "folder.db")
    for table in listed:
        assert listed[table] == folder[table], table
    assert len(listed["two_view_geometries"]) == 31  # 16 + 15 pairs
